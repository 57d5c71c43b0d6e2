//! `DYE_AGENT_CLOCK_OFFSET`: a test and lab knob that shifts every timestamp an agent reports
//! (frames, probe send times, clock exchanges) by a signed duration — `37ms`, `-50ms`,
//! `+1.5s` — as if the node's clock were off by that much. The coordinator must find and remove
//! it; nothing else in dye reads it.

use std::time::Duration;

pub const ENV: &str = "DYE_AGENT_CLOCK_OFFSET";

/// A signed clock shift in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skew(pub i64);

impl Skew {
    /// Parses `[+|-]DURATION` (humantime).
    pub fn parse(text: &str) -> Result<Skew, String> {
        let t = text.trim();
        let (sign, rest) = match t.strip_prefix('-') {
            Some(r) => (-1i64, r),
            None => (1, t.strip_prefix('+').unwrap_or(t)),
        };
        let d: Duration = humantime::parse_duration(rest.trim())
            .map_err(|e| format!("{ENV}={text:?}: {e} (expected e.g. 37ms or -50ms)"))?;
        let ns = i64::try_from(d.as_nanos()).map_err(|_| format!("{ENV}={text:?}: too large"))?;
        Ok(Skew(sign * ns))
    }

    /// From the environment; unset is no shift.
    pub fn from_env() -> Result<Skew, String> {
        match std::env::var(ENV) {
            Ok(v) if !v.trim().is_empty() => Skew::parse(&v),
            _ => Ok(Skew(0)),
        }
    }

    /// Applies the shift to a timestamp (ns since the epoch).
    pub fn apply(self, ts_ns: u64) -> u64 {
        ts_ns.saturating_add_signed(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Skew;

    #[test]
    fn signed_offsets_parse_and_shift() {
        assert_eq!(Skew::parse("37ms").unwrap(), Skew(37_000_000));
        assert_eq!(Skew::parse("+50ms").unwrap(), Skew(50_000_000));
        assert_eq!(Skew::parse("-50ms").unwrap(), Skew(-50_000_000));
        assert_eq!(Skew::parse("- 1s").unwrap(), Skew(-1_000_000_000));
        assert!(Skew::parse("soon").is_err());
        assert_eq!(Skew(-5).apply(3), 0);
        assert_eq!(Skew(-50_000_000).apply(1_000_000_000), 950_000_000);
    }
}
