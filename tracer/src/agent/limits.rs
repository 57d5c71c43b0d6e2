//! What an agent allows whatever a client asks: probes per call and per second, capture
//! duration and bytes, concurrent capture sessions, message sizes. A request over a bound is
//! refused with a status that names the bound; nothing is silently clamped.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tonic::Status;

use super::pb;

/// The agent's bounds.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_probes_per_call: u32,
    /// Probes per second over all clients (a token bucket holding one second's worth).
    pub max_probe_rate: u32,
    pub max_capture_duration: Duration,
    pub max_capture_bytes: u64,
    pub max_sessions: u32,
    /// Largest request or response message.
    pub max_message_bytes: usize,
    /// Largest probe packet.
    pub max_probe_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_probes_per_call: 100,
            max_probe_rate: 200,
            max_capture_duration: Duration::from_secs(120),
            max_capture_bytes: 256 << 20,
            max_sessions: 4,
            max_message_bytes: 1 << 20,
            max_probe_bytes: 65_535,
        }
    }
}

impl Limits {
    pub fn to_proto(&self) -> pb::Limits {
        pb::Limits {
            max_probes_per_call: self.max_probes_per_call,
            max_probe_rate: self.max_probe_rate,
            max_capture_duration_ms: self.max_capture_duration.as_millis() as u64,
            max_capture_bytes: self.max_capture_bytes,
            max_sessions: self.max_sessions,
            max_message_bytes: self.max_message_bytes as u32,
        }
    }

    /// Refuses a capture the agent will not run.
    pub fn check_capture(&self, duration: Duration, bytes: u64) -> Result<(), Status> {
        if duration.is_zero() {
            return Err(Status::invalid_argument("capture duration must be set"));
        }
        if duration > self.max_capture_duration {
            return Err(Status::out_of_range(format!(
                "capture of {} exceeds this agent's bound of {}",
                humantime::format_duration(duration),
                humantime::format_duration(self.max_capture_duration)
            )));
        }
        if bytes > self.max_capture_bytes {
            return Err(Status::out_of_range(format!(
                "capture of {bytes} bytes exceeds this agent's bound of {} bytes",
                self.max_capture_bytes
            )));
        }
        Ok(())
    }

    /// Refuses an injection the agent will not send.
    pub fn check_probes(&self, probes: &[pb::Probe]) -> Result<(), Status> {
        if probes.is_empty() {
            return Err(Status::invalid_argument("no probe to send"));
        }
        if probes.len() > self.max_probes_per_call as usize {
            return Err(Status::out_of_range(format!(
                "{} probes exceed this agent's bound of {} per call",
                probes.len(),
                self.max_probes_per_call
            )));
        }
        if let Some(p) = probes
            .iter()
            .find(|p| p.packet.len() > self.max_probe_bytes)
        {
            return Err(Status::out_of_range(format!(
                "probe {} of {} bytes exceeds {} bytes",
                p.seq,
                p.packet.len(),
                self.max_probe_bytes
            )));
        }
        Ok(())
    }
}

/// Probes per second, all clients together.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    pub fn new(per_second: u32) -> RateLimiter {
        RateLimiter {
            rate: f64::from(per_second),
            state: Mutex::new((f64::from(per_second), Instant::now())),
        }
    }

    /// Takes `n` tokens, or refuses without taking any.
    pub fn take(&self, n: usize) -> Result<(), Status> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let (tokens, last) = *s;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.rate);
        if (n as f64) > tokens {
            *s = (tokens, now);
            return Err(Status::resource_exhausted(format!(
                "probe rate bound: this agent sends at most {} probes per second",
                self.rate
            )));
        }
        *s = (tokens - n as f64, now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limiter_refuses_a_burst_over_one_second_of_probes() {
        let r = RateLimiter::new(10);
        assert!(r.take(10).is_ok());
        let refused = r.take(5).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("10 probes per second"));
    }

    #[test]
    fn captures_over_the_bounds_are_refused_by_name() {
        let l = Limits::default();
        assert!(l.check_capture(Duration::from_secs(5), 1 << 20).is_ok());
        let e = l.check_capture(Duration::from_secs(600), 0).unwrap_err();
        assert_eq!(e.code(), tonic::Code::OutOfRange);
        assert!(e.message().contains("2m"), "{}", e.message());
        let probes = vec![
            pb::Probe {
                seq: 0,
                packet: vec![0; 64]
            };
            101
        ];
        assert!(l.check_probes(&probes).is_err());
        assert!(l.check_probes(&probes[..3]).is_ok());
    }
}
