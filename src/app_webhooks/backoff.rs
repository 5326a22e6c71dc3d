//! When a failed webhook is tried again: capped exponential backoff with
//! jitter, so a receiver coming back after an outage is not hit by every
//! node's retries in the same instant.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The wait after the first failure (before jitter).
    pub base: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The wait after the `failures`-th failure (1 = the first): `base`
    /// doubled per earlier failure, at most `max`, then a random point in
    /// its upper half (never less than half, so retries stay spaced).
    pub fn delay(&self, failures: u32, rng: &mut impl Rng) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        let full = self.base.saturating_mul(1 << doublings).min(self.max);
        let half = full / 2;
        half + full.saturating_sub(half).mul_f64(rng.random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let b = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for (failures, full) in [(1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (40, 60)] {
            let full = Duration::from_secs(full);
            let mut seen = Vec::new();
            for _ in 0..200 {
                let d = b.delay(failures, &mut rng);
                assert!(d >= full / 2 && d <= full, "{failures}: {d:?} vs {full:?}");
                seen.push(d);
            }
            seen.dedup();
            assert!(seen.len() > 100, "jittered");
        }
        assert!(b.delay(0, &mut rng) <= Duration::from_secs(1));
    }
}
