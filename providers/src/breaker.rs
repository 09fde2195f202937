//! The circuit breaker. Written here rather than taken from a crate: the ones on crates.io
//! (`failsafe`, `circuitbreaker-rs`) count consecutive failures or use their own clocks, and we
//! need a failure count *and* ratio over a time window with a minimum number of calls, a bounded
//! number of half-open probes, an observable state, and time passed in by the caller so the
//! state machine is tested without sleeping.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::metrics::BreakerTransition;

/// When the breaker opens and how it recovers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerParams {
    /// Outcomes older than this are forgotten.
    pub window: Duration,
    /// Fewer calls than this in the window never open the breaker.
    pub min_calls: u32,
    /// Opens when this many calls in the window failed...
    pub max_failures: u32,
    /// ... or when this share of them failed.
    pub failure_ratio: f64,
    /// How long the breaker stays open before letting probes through.
    pub open_for: Duration,
    /// Probes let through at once when half-open; this many successes close the breaker.
    pub half_open_probes: u32,
}

impl Default for BreakerParams {
    fn default() -> Self {
        BreakerParams {
            window: Duration::from_secs(30),
            min_calls: 10,
            max_failures: 10,
            failure_ratio: 0.5,
            open_for: Duration::from_secs(15),
            half_open_probes: 2,
        }
    }
}

/// The breaker's state, as shown in `/health` and exported as a gauge (0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }

    pub fn gauge_value(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

/// How one call ended, as far as the breaker cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    Success,
    /// The upstream looks unhealthy (timeout, 5xx, dropped connection, malformed body).
    Failure,
    /// Says nothing about the upstream's health (429, a 4xx, a cancelled call).
    Neutral,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Closed,
    Open {
        until: Instant,
    },
    HalfOpen {
        num_in_flight: u32,
        num_successes: u32,
    },
}

/// The state machine, without locking or clocks of its own.
#[derive(Debug)]
pub struct BreakerCore {
    params: BreakerParams,
    phase: Phase,
    /// `(when, failed)` of recent calls while closed.
    outcomes: VecDeque<(Instant, bool)>,
}

/// Whether a call may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// A normal call while closed.
    Call,
    /// One of the half-open probes.
    Probe,
    /// Refused; try again after this long.
    Rejected { retry_after: Duration },
}

impl BreakerCore {
    pub fn new(params: BreakerParams) -> Self {
        BreakerCore {
            params,
            phase: Phase::Closed,
            outcomes: VecDeque::new(),
        }
    }

    /// Returns the state at `now` (an open breaker whose time is up reads half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { until } if now >= until => BreakerState::HalfOpen,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Decides whether a call starting at `now` may go ahead.
    pub fn admit(&mut self, now: Instant) -> Admission {
        if let Phase::Open { until } = self.phase {
            if now < until {
                return Admission::Rejected {
                    retry_after: until - now,
                };
            }
            self.phase = Phase::HalfOpen {
                num_in_flight: 0,
                num_successes: 0,
            };
        }
        match &mut self.phase {
            Phase::Closed => Admission::Call,
            Phase::HalfOpen { num_in_flight, .. } => {
                if *num_in_flight < self.params.half_open_probes {
                    *num_in_flight += 1;
                    Admission::Probe
                } else {
                    Admission::Rejected {
                        retry_after: Duration::ZERO,
                    }
                }
            }
            Phase::Open { .. } => Admission::Rejected {
                retry_after: self.params.open_for,
            },
        }
    }

    /// Records how an admitted call ended; returns the new state when it changed.
    pub fn record(
        &mut self,
        now: Instant,
        admission: Admission,
        outcome: CallOutcome,
    ) -> Option<BreakerState> {
        match (admission, &mut self.phase) {
            (
                Admission::Probe,
                Phase::HalfOpen {
                    num_in_flight,
                    num_successes,
                },
            ) => {
                *num_in_flight = num_in_flight.saturating_sub(1);
                match outcome {
                    CallOutcome::Failure => Some(self.open(now)),
                    CallOutcome::Success => {
                        *num_successes += 1;
                        if *num_successes >= self.params.half_open_probes {
                            self.phase = Phase::Closed;
                            self.outcomes.clear();
                            Some(BreakerState::Closed)
                        } else {
                            None
                        }
                    }
                    CallOutcome::Neutral => None,
                }
            }
            (Admission::Call, Phase::Closed) => {
                if outcome == CallOutcome::Neutral {
                    return None;
                }
                self.outcomes
                    .push_back((now, outcome == CallOutcome::Failure));
                while self
                    .outcomes
                    .front()
                    .is_some_and(|(at, _)| now.duration_since(*at) > self.params.window)
                {
                    self.outcomes.pop_front();
                }
                let num_calls = self.outcomes.len() as u32;
                let num_failures =
                    self.outcomes.iter().filter(|(_, failed)| *failed).count() as u32;
                let ratio = f64::from(num_failures) / f64::from(num_calls.max(1));
                let should_open = num_calls >= self.params.min_calls
                    && (num_failures >= self.params.max_failures
                        || ratio >= self.params.failure_ratio);
                should_open.then(|| self.open(now))
            }
            // Late outcomes of calls admitted under an earlier phase say nothing new.
            _ => None,
        }
    }

    fn open(&mut self, now: Instant) -> BreakerState {
        self.phase = Phase::Open {
            until: now + self.params.open_for,
        };
        self.outcomes.clear();
        BreakerState::Open
    }
}

/// A breaker shared by every call to one provider.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    provider: Arc<str>,
    core: Arc<Mutex<BreakerCore>>,
}

impl CircuitBreaker {
    pub fn new(provider: &str, params: BreakerParams) -> Self {
        BreakerTransition {
            provider,
            state: BreakerState::Closed,
        }
        .emit_gauge();
        CircuitBreaker {
            provider: Arc::from(provider),
            core: Arc::new(Mutex::new(BreakerCore::new(params))),
        }
    }

    pub fn state(&self) -> BreakerState {
        self.with_core(|core| core.state(Instant::now()))
    }

    /// Admits a call now, or refuses it with the time left open.
    pub fn admit(&self) -> Result<BreakerPermit, Duration> {
        let admission = self.with_core(|core| {
            let before = core.state(Instant::now());
            let admission = core.admit(Instant::now());
            (before, admission)
        });
        match admission {
            (_, Admission::Rejected { retry_after }) => Err(retry_after),
            (before, admission) => {
                if before == BreakerState::HalfOpen && admission == Admission::Probe {
                    self.note_state(BreakerState::HalfOpen);
                }
                Ok(BreakerPermit {
                    breaker: self.clone(),
                    admission,
                    recorded: false,
                })
            }
        }
    }

    fn record(&self, admission: Admission, outcome: CallOutcome) {
        let changed = self.with_core(|core| core.record(Instant::now(), admission, outcome));
        if let Some(state) = changed {
            BreakerTransition {
                provider: &self.provider,
                state,
            }
            .emit();
        }
    }

    fn note_state(&self, state: BreakerState) {
        BreakerTransition {
            provider: &self.provider,
            state,
        }
        .emit_gauge();
    }

    fn with_core<T>(&self, action: impl FnOnce(&mut BreakerCore) -> T) -> T {
        let mut core = match self.core.lock() {
            Ok(core) => core,
            // A panic while holding this lock cannot leave the core half-updated in a way
            // that matters more than losing the breaker altogether.
            Err(poisoned) => poisoned.into_inner(),
        };
        action(&mut core)
    }
}

/// An admitted call. Recorded explicitly with its outcome; dropped unrecorded (the call was
/// cancelled) it counts as neutral, so a cancelled probe never wedges the breaker half-open.
#[derive(Debug)]
pub struct BreakerPermit {
    breaker: CircuitBreaker,
    admission: Admission,
    recorded: bool,
}

impl BreakerPermit {
    pub fn record(mut self, outcome: CallOutcome) {
        self.recorded = true;
        self.breaker.record(self.admission, outcome);
    }
}

impl Drop for BreakerPermit {
    fn drop(&mut self) {
        if !self.recorded {
            self.breaker.record(self.admission, CallOutcome::Neutral);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> BreakerParams {
        BreakerParams {
            window: Duration::from_secs(10),
            min_calls: 4,
            max_failures: 100,
            failure_ratio: 0.5,
            open_for: Duration::from_secs(5),
            half_open_probes: 2,
        }
    }

    fn call(core: &mut BreakerCore, now: Instant, outcome: CallOutcome) -> Option<BreakerState> {
        let admission = core.admit(now);
        assert_eq!(admission, Admission::Call);
        core.record(now, admission, outcome)
    }

    /// Proves the breaker stays closed below the minimum number of calls, opens on the failure
    /// ratio, rejects while open, lets a bounded number of probes through when half-open, and
    /// closes after enough successful probes.
    #[test]
    fn opens_on_ratio_then_recovers_through_probes() {
        let start = Instant::now();
        let mut core = BreakerCore::new(params());
        for _ in 0..3 {
            assert_eq!(call(&mut core, start, CallOutcome::Failure), None);
        }
        assert_eq!(core.state(start), BreakerState::Closed);
        assert_eq!(
            call(&mut core, start, CallOutcome::Success),
            Some(BreakerState::Open)
        );
        let later = start + Duration::from_secs(1);
        assert_eq!(
            core.admit(later),
            Admission::Rejected {
                retry_after: Duration::from_secs(4)
            }
        );
        let reopened_at = start + Duration::from_secs(5);
        assert_eq!(core.state(reopened_at), BreakerState::HalfOpen);
        let first_probe = core.admit(reopened_at);
        let second_probe = core.admit(reopened_at);
        assert_eq!(
            (first_probe, second_probe),
            (Admission::Probe, Admission::Probe)
        );
        assert!(matches!(
            core.admit(reopened_at),
            Admission::Rejected { .. }
        ));
        assert_eq!(
            core.record(reopened_at, first_probe, CallOutcome::Success),
            None
        );
        assert_eq!(
            core.record(reopened_at, second_probe, CallOutcome::Success),
            Some(BreakerState::Closed)
        );
        assert_eq!(core.admit(reopened_at), Admission::Call);
    }

    /// Proves a failed probe opens the breaker again for a full `open_for`.
    #[test]
    fn failed_probe_reopens() {
        let start = Instant::now();
        let mut core = BreakerCore::new(params());
        for _ in 0..4 {
            call(&mut core, start, CallOutcome::Failure);
        }
        let probe_at = start + Duration::from_secs(6);
        let probe = core.admit(probe_at);
        assert_eq!(probe, Admission::Probe);
        assert_eq!(
            core.record(probe_at, probe, CallOutcome::Failure),
            Some(BreakerState::Open)
        );
        assert_eq!(
            core.state(probe_at + Duration::from_secs(4)),
            BreakerState::Open
        );
        assert_eq!(
            core.state(probe_at + Duration::from_secs(5)),
            BreakerState::HalfOpen
        );
    }

    /// Proves old outcomes leave the window, neutral outcomes do not count, and the failure
    /// count opens the breaker even when the ratio is low.
    #[test]
    fn window_neutral_outcomes_and_failure_count() {
        let start = Instant::now();
        let mut core = BreakerCore::new(params());
        for _ in 0..3 {
            call(&mut core, start, CallOutcome::Failure);
        }
        // 20 s later the three failures are forgotten: one more failure is 1 of 1 < min_calls.
        let later = start + Duration::from_secs(20);
        assert_eq!(call(&mut core, later, CallOutcome::Failure), None);
        for _ in 0..10 {
            assert_eq!(call(&mut core, later, CallOutcome::Neutral), None);
        }
        assert_eq!(core.state(later), BreakerState::Closed);

        let mut by_count = BreakerCore::new(BreakerParams {
            max_failures: 3,
            failure_ratio: 1.0,
            ..params()
        });
        for _ in 0..10 {
            call(&mut by_count, start, CallOutcome::Success);
        }
        call(&mut by_count, start, CallOutcome::Failure);
        call(&mut by_count, start, CallOutcome::Failure);
        assert_eq!(
            call(&mut by_count, start, CallOutcome::Failure),
            Some(BreakerState::Open)
        );
    }

    /// Proves a probe dropped without an outcome frees its slot instead of wedging half-open.
    #[test]
    fn cancelled_probe_frees_its_slot() {
        let breaker = CircuitBreaker::new(
            "test",
            BreakerParams {
                open_for: Duration::ZERO,
                half_open_probes: 1,
                min_calls: 1,
                ..params()
            },
        );
        breaker
            .admit()
            .expect("closed")
            .record(CallOutcome::Failure);
        let probe = breaker.admit().expect("probe admitted");
        assert!(breaker.admit().is_err(), "only one probe at a time");
        drop(probe);
        breaker
            .admit()
            .expect("slot freed")
            .record(CallOutcome::Success);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }
}
