//! What a run came to: time to detect and to recover, jobs lost, duplicate executions, outcome
//! conflicts, client errors, resource peaks, and the per-second timeline the report draws.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::workload::{Observed, Sample};

/// One second of the run.
#[derive(Debug, Clone, Serialize)]
pub struct TimelinePoint {
    pub t_s: u64,
    pub completions: i64,
    pub submissions: u64,
    pub errors: u64,
    pub p99_latency_ms: f64,
    pub nodes_ready: usize,
    pub backlog: i64,
    pub rss_mib: f64,
}

/// An SLO and whether the run met it.
#[derive(Debug, Clone, Serialize)]
pub struct SloCheck {
    pub name: String,
    pub target: String,
    pub actual: String,
    pub pass: bool,
}

/// Everything measured of one scenario's run.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    pub detect_ms: Option<u64>,
    pub recover_ms: Option<u64>,
    pub num_accepted: usize,
    pub num_lost: usize,
    /// Each lost job's idempotency key, with its status and id when it has a row.
    pub lost_ids: Vec<String>,
    /// Accepted jobs that ended failed, dead or cancelled.
    pub num_not_succeeded: usize,
    pub num_duplicate_executions: i64,
    /// Jobs whose outcome events disagree (different status or attempt): must be 0.
    pub num_outcome_conflicts: usize,
    /// Outcome events beyond the first per job, all agreeing (a redelivered finished job's
    /// stored outcome published again).
    pub num_repeated_events: usize,
    pub client_errors: BTreeMap<String, u64>,
    /// HTTP submissions given up after every retry.
    pub num_given_up: u64,
    /// AMQP publishes never confirmed after every retry.
    pub num_given_up_amqp: u64,
    pub peak_rss_mib: f64,
    pub peak_cpu_percent: f64,
    pub timeline: Vec<TimelinePoint>,
}

/// The final row of a job, found by the idempotency key it was submitted with.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FinalRow {
    pub id: String,
    pub idempotency_key: Option<String>,
    pub status: String,
    pub attempts: i32,
}

/// When the fault was in place, and what steady state means for this run.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub fault_start_ms: u64,
    pub fault_end_ms: u64,
    /// Nodes expected ready once recovered.
    pub expected_ready: usize,
    /// Submissions per second.
    pub rate: f64,
}

/// How long steady state must hold to count as recovered.
const STEADY_FOR_MS: u64 = 2_000;

pub fn measure(observed: &Observed, rows: &[FinalRow], window: Window) -> Measured {
    let baseline_backlog = observed
        .samples
        .iter()
        .filter(|sample| sample.at_ms >= 2_000 && sample.at_ms < window.fault_start_ms)
        .filter_map(|sample| sample.backlog_opt)
        .max()
        .unwrap_or(0);
    let backlog_limit = (baseline_backlog * 2)
        .max((window.rate * 2.0) as i64)
        .max(20);
    let error_times: Vec<u64> = observed
        .submissions
        .iter()
        .filter(|submission| !(200..300).contains(&submission.status))
        .map(|submission| submission.at_ms)
        .collect();
    let errors_near = |at_ms: u64| {
        error_times
            .iter()
            .any(|error_ms| *error_ms <= at_ms && *error_ms + 1_000 > at_ms)
    };
    let healthy = |sample: &Sample| {
        let ready = sample.ready.iter().filter(|status| **status == 200).count();
        let backlog_ok = sample
            .backlog_opt
            .is_some_and(|backlog| backlog <= backlog_limit);
        (ready, backlog_ok && !errors_near(sample.at_ms))
    };
    let detect_ms = observed
        .samples
        .iter()
        .filter(|sample| sample.at_ms >= window.fault_start_ms)
        .find(|sample| {
            let (ready, ok) = healthy(sample);
            !ok || ready < sample.ready.len()
        })
        .map(|sample| sample.at_ms - window.fault_start_ms);
    let steady = |sample: &Sample| {
        let (ready, ok) = healthy(sample);
        ok && ready >= window.expected_ready
    };
    let after: Vec<&Sample> = observed
        .samples
        .iter()
        .filter(|sample| sample.at_ms >= window.fault_end_ms)
        .collect();
    let mut recover_ms = None;
    for (index, sample) in after.iter().enumerate() {
        let holds = after[index..]
            .iter()
            .take_while(|later| later.at_ms < sample.at_ms + STEADY_FOR_MS)
            .all(|later| steady(later));
        let long_enough = after
            .last()
            .is_some_and(|last| last.at_ms >= sample.at_ms + STEADY_FOR_MS);
        if holds && long_enough {
            recover_ms = Some(sample.at_ms - window.fault_end_ms);
            break;
        }
    }

    let by_key: HashMap<&str, &FinalRow> = rows
        .iter()
        .filter_map(|row| Some((row.idempotency_key.as_deref()?, row)))
        .collect();
    let accepted: HashSet<&str> = observed
        .accepted
        .iter()
        .map(|job| job.key.as_str())
        .collect();
    let mut accepted_ids = HashSet::new();
    let mut lost_ids = Vec::new();
    let mut num_not_succeeded = 0;
    let mut num_duplicate_executions = 0;
    for key in &accepted {
        match by_key.get(key) {
            None => lost_ids.push(format!("{key} (no row)")),
            Some(row) if matches!(row.status.as_str(), "queued" | "running") => {
                lost_ids.push(format!("{key} ({}, job {})", row.status, row.id))
            }
            Some(row) => {
                accepted_ids.insert(row.id.as_str());
                if row.status != "succeeded" {
                    num_not_succeeded += 1;
                }
                num_duplicate_executions += i64::from((row.attempts - 1).max(0));
            }
        }
    }
    lost_ids.sort();
    let mut num_outcome_conflicts = 0;
    let mut num_repeated_events = 0;
    for (job_id, events) in &observed.events {
        if !accepted_ids.contains(job_id.as_str()) {
            continue;
        }
        let distinct: HashSet<&(String, i64)> = events.iter().collect();
        if distinct.len() > 1 {
            num_outcome_conflicts += 1;
        }
        num_repeated_events += events.len().saturating_sub(1);
    }
    let mut client_errors = BTreeMap::new();
    for submission in &observed.submissions {
        if !(200..300).contains(&submission.status) {
            let key = match (submission.amqp, submission.status) {
                (true, _) => "amqp: not confirmed".to_owned(),
                (false, 0) => "no answer".to_owned(),
                (false, status) => status.to_string(),
            };
            *client_errors.entry(key).or_insert(0) += 1;
        }
    }
    let peak_rss_mib = observed
        .samples
        .iter()
        .flat_map(|sample| sample.rss_kib.iter())
        .max()
        .map_or(0.0, |kib| *kib as f64 / 1024.0);
    let peak_cpu_percent = peak_cpu(&observed.samples);
    Measured {
        detect_ms,
        recover_ms,
        num_accepted: accepted.len(),
        num_lost: lost_ids.len(),
        lost_ids,
        num_not_succeeded,
        num_duplicate_executions,
        num_outcome_conflicts,
        num_repeated_events,
        client_errors,
        num_given_up: observed.num_given_up,
        num_given_up_amqp: observed.num_given_up_amqp,
        peak_rss_mib,
        peak_cpu_percent,
        timeline: timeline(observed),
    }
}

/// The highest CPU use of any node between two samples, in percent of one core.
fn peak_cpu(samples: &[Sample]) -> f64 {
    let mut peak: f64 = 0.0;
    for pair in samples.windows(2) {
        let elapsed_ms = pair[1].at_ms.saturating_sub(pair[0].at_ms).max(1) as f64;
        for (before, after) in pair[0].cpu_ms.iter().zip(&pair[1].cpu_ms) {
            if *after >= *before && *before > 0 {
                peak = peak.max((*after - *before) as f64 / elapsed_ms * 100.0);
            }
        }
    }
    peak
}

fn timeline(observed: &Observed) -> Vec<TimelinePoint> {
    let last_ms = observed
        .samples
        .iter()
        .map(|sample| sample.at_ms)
        .chain(
            observed
                .submissions
                .iter()
                .map(|submission| submission.at_ms),
        )
        .max()
        .unwrap_or(0);
    let mut points = Vec::new();
    let mut previous_finished = 0;
    for second in 0..=last_ms / 1_000 {
        let in_second = |at_ms: u64| at_ms / 1_000 == second;
        let mut latencies: Vec<f64> = observed
            .submissions
            .iter()
            .filter(|submission| in_second(submission.at_ms))
            .map(|submission| submission.latency_ms)
            .collect();
        latencies.sort_by(f64::total_cmp);
        let p99_latency_ms = latencies
            .get(((latencies.len() as f64 * 0.99).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0.0);
        let errors = observed
            .submissions
            .iter()
            .filter(|submission| {
                in_second(submission.at_ms) && !(200..300).contains(&submission.status)
            })
            .count() as u64;
        let last_sample = observed
            .samples
            .iter()
            .rfind(|sample| in_second(sample.at_ms));
        let finished = last_sample
            .and_then(|sample| sample.num_finished_opt)
            .unwrap_or(previous_finished);
        points.push(TimelinePoint {
            t_s: second,
            completions: (finished - previous_finished).max(0),
            submissions: latencies.len() as u64,
            errors,
            p99_latency_ms,
            nodes_ready: last_sample.map_or(0, |sample| {
                sample.ready.iter().filter(|status| **status == 200).count()
            }),
            backlog: last_sample
                .and_then(|sample| sample.backlog_opt)
                .unwrap_or(0),
            rss_mib: last_sample.map_or(0.0, |sample| {
                sample.rss_kib.iter().sum::<u64>() as f64 / 1024.0
            }),
        });
        previous_finished = finished;
    }
    points
}

/// Returns the `quantile` (0–1) of `values` (nearest rank), or `None` when empty.
pub fn quantile(values: &[u64], quantile: f64) -> Option<u64> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = ((sorted.len() as f64 * quantile).ceil() as usize).max(1);
    sorted.get(rank - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the nearest-rank quantile: p99 of 1..=100 is 99, of ten values the largest.
    #[test]
    fn quantile_is_nearest_rank() {
        let hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&hundred, 0.99), Some(99));
        let ten: Vec<u64> = (1..=10).collect();
        assert_eq!(quantile(&ten, 0.99), Some(10));
        assert_eq!(quantile(&[], 0.99), None);
    }

    /// Proves a job accepted but never finished counts as lost, a retried one as a duplicate
    /// execution, and a finished job whose outcome events disagree as a conflict.
    #[test]
    fn lost_duplicates_and_conflicts_are_counted() {
        let mut observed = Observed::default();
        for id in ["a", "b", "c"] {
            observed.accepted.push(crate::workload::Accepted {
                key: format!("key-{id}"),
            });
        }
        observed.events.insert(
            "a".to_owned(),
            vec![("succeeded".to_owned(), 2), ("failed".to_owned(), 2)],
        );
        let rows = vec![
            FinalRow {
                id: "a".to_owned(),
                idempotency_key: Some("key-a".to_owned()),
                status: "succeeded".to_owned(),
                attempts: 2,
            },
            FinalRow {
                id: "b".to_owned(),
                idempotency_key: Some("key-b".to_owned()),
                status: "running".to_owned(),
                attempts: 1,
            },
        ];
        let window = Window {
            fault_start_ms: 0,
            fault_end_ms: 0,
            expected_ready: 1,
            rate: 10.0,
        };
        let measured = measure(&observed, &rows, window);
        assert_eq!(
            measured.lost_ids,
            vec![
                "key-b (running, job b)".to_owned(),
                "key-c (no row)".to_owned()
            ]
        );
        assert_eq!(measured.num_duplicate_executions, 1);
        assert_eq!(measured.num_outcome_conflicts, 1);
        assert_eq!(measured.num_repeated_events, 1);
    }
}
