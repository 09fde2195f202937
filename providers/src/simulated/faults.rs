use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::rng::SplitMix64;

/// What the simulated engine does wrong, set per run (config, flags) or live through
/// `PUT /admin/faults`. Rates are probabilities in `[0, 1]`, drawn once per request in the
/// order hang, drop, error, rate limit, malformed; the rest are answered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultKnobs {
    /// Delay before every answer...
    pub latency_ms: u64,
    /// ... plus a uniform extra delay in `[0, latency_jitter_ms]`...
    pub latency_jitter_ms: u64,
    /// ... plus, with probability `slow_rate`, `slow_ms` more (a slow tail).
    pub slow_rate: f64,
    pub slow_ms: u64,
    /// Requests never answered (until the client gives up).
    pub hang_rate: f64,
    /// Requests whose connection is dropped after the headers, mid-body.
    pub drop_rate: f64,
    /// Requests answered `500` (`529 overloaded` in the Anthropic format).
    pub error_rate: f64,
    /// Requests answered `429` with `Retry-After` (seconds) and `retry-after-ms`.
    pub rate_limit_rate: f64,
    pub retry_after_ms: u64,
    /// Requests answered `200` with a body that is not the documented JSON.
    pub malformed_rate: f64,
}

impl FaultKnobs {
    /// Returns the first rate outside `[0, 1]`, named, if any.
    pub fn validate(&self) -> Result<(), String> {
        let rates = [
            ("slow_rate", self.slow_rate),
            ("hang_rate", self.hang_rate),
            ("drop_rate", self.drop_rate),
            ("error_rate", self.error_rate),
            ("rate_limit_rate", self.rate_limit_rate),
            ("malformed_rate", self.malformed_rate),
        ];
        for (name, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name}: must be between 0 and 1, got {rate}"));
            }
        }
        Ok(())
    }
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOutcome {
    Answer,
    Hang,
    Drop,
    Error,
    RateLimited { retry_after: Duration },
    Malformed,
}

/// Rolls the fault dice: deterministic for a given seed and request order.
#[derive(Debug)]
pub struct FaultDice {
    seed: u64,
    num_rolls: AtomicU64,
}

impl FaultDice {
    pub fn new(seed: u64) -> Self {
        FaultDice {
            seed,
            num_rolls: AtomicU64::new(0),
        }
    }

    /// Returns the delay and the outcome for the next request under `knobs`.
    pub fn roll(&self, knobs: &FaultKnobs) -> (Duration, FaultOutcome) {
        let index = self.num_rolls.fetch_add(1, Ordering::Relaxed);
        let mut rng = SplitMix64::new(self.seed ^ index.wrapping_mul(0x2545_F491_4F6C_DD1D));
        let mut delay_ms = knobs.latency_ms;
        if knobs.latency_jitter_ms > 0 {
            delay_ms += rng.next_u64() % (knobs.latency_jitter_ms + 1);
        }
        if rng.next_f64() < knobs.slow_rate {
            delay_ms += knobs.slow_ms;
        }
        let roll = rng.next_f64();
        let mut threshold = 0.0;
        let outcomes = [
            (knobs.hang_rate, FaultOutcome::Hang),
            (knobs.drop_rate, FaultOutcome::Drop),
            (knobs.error_rate, FaultOutcome::Error),
            (
                knobs.rate_limit_rate,
                FaultOutcome::RateLimited {
                    retry_after: Duration::from_millis(knobs.retry_after_ms),
                },
            ),
            (knobs.malformed_rate, FaultOutcome::Malformed),
        ];
        for (rate, outcome) in outcomes {
            threshold += rate;
            if roll < threshold {
                return (Duration::from_millis(delay_ms), outcome);
            }
        }
        (Duration::from_millis(delay_ms), FaultOutcome::Answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the fault rates are honoured roughly and that certain faults always fire.
    #[test]
    fn rates_are_honoured() {
        let dice = FaultDice::new(1);
        let knobs = FaultKnobs {
            error_rate: 0.3,
            ..FaultKnobs::default()
        };
        let num_errors = (0..1_000)
            .filter(|_| dice.roll(&knobs).1 == FaultOutcome::Error)
            .count();
        assert!((200..400).contains(&num_errors), "{num_errors} errors");
        let always_hang = FaultKnobs {
            hang_rate: 1.0,
            latency_ms: 5,
            ..FaultKnobs::default()
        };
        assert_eq!(
            dice.roll(&always_hang),
            (Duration::from_millis(5), FaultOutcome::Hang)
        );
        assert_eq!(dice.roll(&FaultKnobs::default()).1, FaultOutcome::Answer);
        assert!(
            FaultKnobs {
                error_rate: 1.5,
                ..FaultKnobs::default()
            }
            .validate()
            .unwrap_err()
            .starts_with("error_rate")
        );
    }
}
