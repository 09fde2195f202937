//! Schedule triggers as pure functions of time: parsing cron expressions and time zones,
//! computing slots, and deciding which due slots fire under a misfire policy. No I/O, so every
//! trigger type and policy is tested with plain numbers. The [`Clock`] the scheduler reads and
//! sleeps on is here too.
//!
//! Cron parsing and evaluation is `croner` (5 or 6 fields, `L`/`W`/`#`, DST-aware on any
//! `chrono` time zone); time zones are `chrono-tz` (the IANA database compiled in, so a node
//! needs no system tzdata).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bulwark_store::{MisfirePolicy, ScheduleTrigger};
use chrono::TimeZone;
use chrono_tz::Tz;
use croner::Cron;
use futures::future::BoxFuture;
use tokio::sync::watch;

/// Upper bound on slots enumerated in one pass; a schedule further behind than this is
/// fast-forwarded and the rest counted as missed.
pub const MAX_SLOTS_PER_PASS: usize = 1_000;

/// Where the scheduler reads the time and waits for it. Injected so tests drive every trigger
/// and every wake-up deterministically.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Returns the current time in Unix milliseconds.
    fn now_ms(&self) -> i64;

    /// Returns a future that completes once this clock reads `deadline_ms` or later (at once
    /// when it already does).
    fn sleep_until(&self, deadline_ms: i64) -> BoxFuture<'static, ()>;
}

/// The wall clock; it waits on tokio's timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        bulwark_core::now_ms()
    }

    fn sleep_until(&self, deadline_ms: i64) -> BoxFuture<'static, ()> {
        let wait_ms = deadline_ms.saturating_sub(self.now_ms()).max(0) as u64;
        Box::pin(tokio::time::sleep(Duration::from_millis(wait_ms)))
    }
}

/// A clock that moves only when told to; clones share the same time. Its sleeps end when a
/// `set` or `advance` reaches their deadline, never on their own.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now_ms: Arc<watch::Sender<i64>>,
}

impl ManualClock {
    pub fn new(start_ms: i64) -> Self {
        ManualClock {
            now_ms: Arc::new(watch::Sender::new(start_ms)),
        }
    }

    pub fn advance(&self, by: Duration) {
        self.now_ms
            .send_modify(|now_ms| *now_ms += by.as_millis() as i64);
    }

    pub fn set(&self, now_ms: i64) {
        self.now_ms.send_replace(now_ms);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        *self.now_ms.borrow()
    }

    fn sleep_until(&self, deadline_ms: i64) -> BoxFuture<'static, ()> {
        let mut now_rx = self.now_ms.subscribe();
        Box::pin(async move {
            // The sender lives as long as any clone of the clock; should all be gone, the
            // time can no longer move, so the sleep never ends.
            if now_rx
                .wait_for(|now_ms| *now_ms >= deadline_ms)
                .await
                .is_err()
            {
                std::future::pending::<()>().await;
            }
        })
    }
}

/// Why a trigger is unusable; the message starts with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct TriggerError {
    pub field: &'static str,
    pub message: String,
}

impl TriggerError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        TriggerError {
            field,
            message: message.into(),
        }
    }
}

/// Parses a cron expression (5 fields, or 6 with leading seconds).
pub fn parse_cron(expression: &str) -> Result<Cron, TriggerError> {
    Cron::from_str(expression).map_err(|error| {
        TriggerError::new("trigger.cron", format!("invalid cron expression: {error}"))
    })
}

/// Parses an IANA time zone name such as `Europe/Berlin` or `UTC`.
pub fn parse_timezone(name: &str) -> Result<Tz, TriggerError> {
    name.parse::<Tz>().map_err(|_| {
        TriggerError::new(
            "trigger.timezone",
            format!("unknown time zone `{name}`, expected an IANA name such as Europe/Berlin"),
        )
    })
}

/// Checks a trigger before it is stored.
pub fn validate_trigger(trigger: &ScheduleTrigger) -> Result<(), TriggerError> {
    match trigger {
        ScheduleTrigger::Cron {
            expression,
            timezone,
        } => {
            parse_cron(expression)?;
            parse_timezone(timezone)?;
        }
        ScheduleTrigger::Interval { every_ms, .. } => {
            if *every_ms < 1_000 {
                return Err(TriggerError::new(
                    "trigger.every_ms",
                    "must be at least 1000 (one second)",
                ));
            }
        }
        ScheduleTrigger::Once { .. } => {}
    }
    Ok(())
}

/// Returns the first slot strictly after `after_ms`, or `None` when the trigger has no more.
pub fn next_slot_after(
    trigger: &ScheduleTrigger,
    after_ms: i64,
) -> Result<Option<i64>, TriggerError> {
    match trigger {
        ScheduleTrigger::Cron {
            expression,
            timezone,
        } => {
            let cron = parse_cron(expression)?;
            let zone = parse_timezone(timezone)?;
            let Some(start) = zone.timestamp_millis_opt(after_ms).single() else {
                return Ok(None);
            };
            match cron.find_next_occurrence(&start, false) {
                Ok(next) => Ok(Some(next.timestamp_millis())),
                Err(_) => Ok(None),
            }
        }
        ScheduleTrigger::Interval {
            every_ms,
            anchor_ms,
        } => {
            let every = (*every_ms).max(1);
            if after_ms < *anchor_ms {
                return Ok(Some(*anchor_ms));
            }
            let num_elapsed = (after_ms - anchor_ms) / every + 1;
            Ok(Some(anchor_ms + num_elapsed * every))
        }
        ScheduleTrigger::Once { at_ms } => Ok((*at_ms > after_ms).then_some(*at_ms)),
    }
}

/// Returns the first slot of a new (or resumed, or re-triggered) schedule at `now_ms`.
pub fn first_slot(trigger: &ScheduleTrigger, now_ms: i64) -> Result<Option<i64>, TriggerError> {
    match trigger {
        // A one-time schedule in the past is still due once; the misfire policy decides.
        ScheduleTrigger::Once { at_ms } => Ok(Some(*at_ms)),
        ScheduleTrigger::Interval { anchor_ms, .. } if *anchor_ms >= now_ms => Ok(Some(*anchor_ms)),
        _ => next_slot_after(trigger, now_ms),
    }
}

/// What to do with the slots of one schedule that are due now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FirePlan {
    /// Slots to fire, oldest first.
    pub fire: Vec<i64>,
    /// Missed slots to record (bounded), oldest first.
    pub missed: Vec<i64>,
    /// All missed slots, including those beyond the recording bound.
    pub num_missed: u64,
    /// The first slot after now; `None` when the trigger has no more.
    pub next_fire_at_ms: Option<i64>,
}

/// What [`plan_fires`] is given.
#[derive(Debug, Clone, Copy)]
pub struct PlanParams<'a> {
    pub trigger: &'a ScheduleTrigger,
    pub policy: MisfirePolicy,
    /// The schedule's first unhandled slot.
    pub next_fire_at_ms: i64,
    pub now_ms: i64,
    /// A slot later than this is a misfire.
    pub misfire_grace_ms: i64,
    /// `catch_up` fires missed slots no older than this.
    pub catch_up_window_ms: i64,
    /// `catch_up` fires at most this many missed slots per pass.
    pub max_catch_up: usize,
}

/// Decides which due slots fire: slots within the grace fire; older ones (misfires) follow
/// the policy: `skip` records them as missed, `fire_once` fires the latest and records the
/// rest, `catch_up` fires those inside the window (at most `max_catch_up`, the latest ones).
pub fn plan_fires(params: &PlanParams<'_>) -> Result<FirePlan, TriggerError> {
    let mut due = Vec::new();
    let mut slot_opt = Some(params.next_fire_at_ms);
    let mut num_uncounted_missed: u64 = 0;
    while let Some(slot) = slot_opt {
        if slot > params.now_ms {
            break;
        }
        if due.len() >= MAX_SLOTS_PER_PASS {
            // Far behind: count what remains without listing it.
            num_uncounted_missed = count_slots_until(params.trigger, slot, params.now_ms)?;
            slot_opt = next_slot_after(params.trigger, params.now_ms)?;
            break;
        }
        due.push(slot);
        slot_opt = next_slot_after(params.trigger, slot)?;
    }
    let late_before_ms = params.now_ms - params.misfire_grace_ms;
    let (late, on_time): (Vec<i64>, Vec<i64>) =
        due.into_iter().partition(|slot| *slot < late_before_ms);
    let mut fire = Vec::new();
    let mut missed = Vec::new();
    match params.policy {
        MisfirePolicy::Skip => missed = late,
        MisfirePolicy::FireOnce => {
            if let Some((latest, older)) = late.split_last() {
                missed = older.to_vec();
                fire.push(*latest);
            }
        }
        MisfirePolicy::CatchUp => {
            let window_start_ms = params.now_ms - params.catch_up_window_ms;
            let (in_window, too_old): (Vec<i64>, Vec<i64>) =
                late.into_iter().partition(|slot| *slot >= window_start_ms);
            missed = too_old;
            let num_beyond_bound = in_window.len().saturating_sub(params.max_catch_up);
            missed.extend_from_slice(&in_window[..num_beyond_bound]);
            missed.sort_unstable();
            fire.extend_from_slice(&in_window[num_beyond_bound..]);
        }
    }
    fire.extend(on_time);
    let num_missed = missed.len() as u64 + num_uncounted_missed;
    Ok(FirePlan {
        fire,
        missed,
        num_missed,
        next_fire_at_ms: slot_opt,
    })
}

/// Counts slots in `[from_ms, until_ms]`, in closed form for intervals and bounded for cron.
fn count_slots_until(
    trigger: &ScheduleTrigger,
    from_ms: i64,
    until_ms: i64,
) -> Result<u64, TriggerError> {
    match trigger {
        ScheduleTrigger::Interval { every_ms, .. } => {
            Ok(((until_ms - from_ms) / (*every_ms).max(1) + 1).max(0) as u64)
        }
        ScheduleTrigger::Once { .. } => Ok(1),
        ScheduleTrigger::Cron { .. } => {
            let mut count = 0;
            let mut slot_opt = Some(from_ms);
            while let Some(slot) = slot_opt
                && slot <= until_ms
                && count < 100_000
            {
                count += 1;
                slot_opt = next_slot_after(trigger, slot)?;
            }
            Ok(count)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;

    fn ms(text: &str) -> i64 {
        bulwark_core::parse_rfc3339_ms(text).unwrap()
    }

    fn interval(every_ms: i64, anchor_ms: i64) -> ScheduleTrigger {
        ScheduleTrigger::Interval {
            every_ms,
            anchor_ms,
        }
    }

    /// Proves bad cron expressions, time zones and intervals are refused naming the field.
    #[test]
    fn invalid_triggers_name_the_field() {
        let bad_cron = ScheduleTrigger::Cron {
            expression: "61 * * * *".into(),
            timezone: "UTC".into(),
        };
        assert_eq!(
            validate_trigger(&bad_cron).unwrap_err().field,
            "trigger.cron"
        );
        let bad_zone = ScheduleTrigger::Cron {
            expression: "*/5 * * * *".into(),
            timezone: "Mars/Olympus".into(),
        };
        assert_eq!(
            validate_trigger(&bad_zone).unwrap_err().field,
            "trigger.timezone"
        );
        assert_eq!(
            validate_trigger(&interval(10, 0)).unwrap_err().field,
            "trigger.every_ms"
        );
        assert!(validate_trigger(&interval(1_000, 0)).is_ok());
    }

    /// Proves cron slots are computed in the schedule's time zone, across a DST change.
    #[test]
    fn cron_slots_follow_the_time_zone() {
        let berlin_nine = ScheduleTrigger::Cron {
            expression: "0 9 * * *".into(),
            timezone: "Europe/Berlin".into(),
        };
        // Winter: 09:00 in Berlin is 08:00 UTC.
        let next = next_slot_after(&berlin_nine, ms("2026-01-10T12:00:00Z")).unwrap();
        assert_eq!(next, Some(ms("2026-01-11T08:00:00Z")));
        // Summer: 09:00 in Berlin is 07:00 UTC.
        let next = next_slot_after(&berlin_nine, ms("2026-07-10T12:00:00Z")).unwrap();
        assert_eq!(next, Some(ms("2026-07-11T07:00:00Z")));
        let every_five_seconds = ScheduleTrigger::Cron {
            expression: "*/5 * * * * *".into(),
            timezone: "UTC".into(),
        };
        let next = next_slot_after(&every_five_seconds, ms("2026-01-01T00:00:01Z")).unwrap();
        assert_eq!(next, Some(ms("2026-01-01T00:00:05Z")));
    }

    /// Proves interval slots stay aligned to their anchor and one-time triggers fire once.
    #[test]
    fn interval_and_once_slots() {
        let trigger = interval(MINUTE, 1_000);
        assert_eq!(next_slot_after(&trigger, 0).unwrap(), Some(1_000));
        assert_eq!(
            next_slot_after(&trigger, 1_000).unwrap(),
            Some(1_000 + MINUTE)
        );
        assert_eq!(
            next_slot_after(&trigger, 1_001).unwrap(),
            Some(1_000 + MINUTE)
        );
        let once = ScheduleTrigger::Once { at_ms: 5_000 };
        assert_eq!(first_slot(&once, 9_000).unwrap(), Some(5_000));
        assert_eq!(next_slot_after(&once, 5_000).unwrap(), None);
    }

    fn plan(policy: MisfirePolicy, now_ms: i64) -> FirePlan {
        plan_fires(&PlanParams {
            trigger: &interval(MINUTE, 0),
            policy,
            next_fire_at_ms: MINUTE,
            now_ms,
            misfire_grace_ms: 5_000,
            catch_up_window_ms: 3 * MINUTE,
            max_catch_up: 2,
        })
        .unwrap()
    }

    /// Proves an on-time slot fires under every policy and nothing counts as missed.
    #[test]
    fn on_time_slots_fire() {
        for policy in MisfirePolicy::ALL {
            let plan = plan(*policy, MINUTE + 1_000);
            assert_eq!(plan.fire, vec![MINUTE], "{policy}");
            assert_eq!(plan.num_missed, 0);
            assert_eq!(plan.next_fire_at_ms, Some(2 * MINUTE));
        }
    }

    /// Proves the three misfire policies after ten minutes of downtime.
    #[test]
    fn misfire_policies_after_downtime() {
        // Slots 1..=10 minutes are due at 10m30s; slot 10 is late too (grace 5 s).
        let now_ms = 10 * MINUTE + 30_000;
        let skip = plan(MisfirePolicy::Skip, now_ms);
        assert!(skip.fire.is_empty());
        assert_eq!(skip.num_missed, 10);
        assert_eq!(skip.next_fire_at_ms, Some(11 * MINUTE));

        let fire_once = plan(MisfirePolicy::FireOnce, now_ms);
        assert_eq!(fire_once.fire, vec![10 * MINUTE]);
        assert_eq!(fire_once.num_missed, 9);

        // Window 3 min: slots 8, 9, 10 qualify, bounded to the latest 2.
        let catch_up = plan(MisfirePolicy::CatchUp, now_ms);
        assert_eq!(catch_up.fire, vec![9 * MINUTE, 10 * MINUTE]);
        assert_eq!(catch_up.num_missed, 8);
        assert_eq!(catch_up.missed.len(), 8);
    }

    /// Proves a schedule far behind is fast-forwarded with every missed slot counted.
    #[test]
    fn far_behind_is_bounded() {
        let now_ms = 5_000 * MINUTE;
        let skip = plan(MisfirePolicy::Skip, now_ms);
        assert_eq!(skip.num_missed, 5_000);
        assert!(skip.missed.len() <= MAX_SLOTS_PER_PASS);
        assert_eq!(skip.next_fire_at_ms, Some(5_001 * MINUTE));
    }
}
