//! Value grammars every subcommand shares, so a flag means the same thing everywhere.

use std::time::Duration;

/// A duration: a number with a unit (`500ms`, `2s`, `1m30s`, `1h`: humantime's grammar) or a
/// bare number of seconds (`3`, `0.5`).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.') {
        let secs: f64 = t
            .parse()
            .map_err(|_| format!("bad duration {s:?}: expected e.g. 2s, 500ms, 1m30s or 3"))?;
        return Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("bad duration {s:?}: out of range"));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("bad duration {s:?} ({e}): expected e.g. 2s, 500ms, 1m30s or 3"))
}

/// A duration that must be above zero.
pub(crate) fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("duration {s:?} must be above zero"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_grammar_for_every_duration_flag() {
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("3x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("1.2.3").is_err());
        assert!(parse_positive_duration("0").is_err());
        assert_eq!(
            parse_positive_duration("0.1"),
            Ok(Duration::from_millis(100))
        );
    }
}
