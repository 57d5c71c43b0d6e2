//! Randomness from the operating system that fails loudly.
//!
//! dye marks its probes (trace ids, ICMP echo ids, source ports) with random numbers so that two
//! runs, or two engineers tracing at once, never mistake each other's packets. A clock-derived
//! fallback would make exactly that collision likely (two runs started in the same tick), so
//! there is none: if the kernel's CSPRNG cannot be read (`getrandom(2)`, or `/dev/urandom` on
//! kernels without it), the caller gets a [`RandomError`] and decides. It lives in `dye-capture`,
//! the crate that already owns dye's other direct OS interfaces, so both the tracer and the
//! capture code can use it without a new crate.

/// The operating system's random source could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read random numbers from the operating system: {0}")]
pub struct RandomError(#[source] pub getrandom::Error);

/// A uniformly random `u32` from the OS CSPRNG.
pub fn random_u32() -> Result<u32, RandomError> {
    getrandom::u32().map_err(RandomError)
}

/// A uniformly random `u64` from the OS CSPRNG.
pub fn random_u64() -> Result<u64, RandomError> {
    getrandom::u64().map_err(RandomError)
}

/// Fills `buf` from the OS CSPRNG.
pub fn fill(buf: &mut [u8]) -> Result<(), RandomError> {
    getrandom::fill(buf).map_err(RandomError)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_differ() {
        // 64 draws of 32 bits colliding by chance: probability ~5e-7.
        let mut v: Vec<u32> = (0..64).map(|_| random_u32().unwrap()).collect();
        v.sort_unstable();
        v.dedup();
        assert_eq!(v.len(), 64);
        let mut b = [0u8; 32];
        fill(&mut b).unwrap();
        assert_ne!(b, [0u8; 32]);
        assert_ne!(random_u64().unwrap(), random_u64().unwrap());
    }

    #[test]
    fn errors_say_where_they_come_from() {
        let e = RandomError(getrandom::Error::UNSUPPORTED);
        assert!(
            e.to_string().starts_with("cannot read random numbers"),
            "{e}"
        );
        assert!(std::error::Error::source(&e).is_some());
    }
}
