//! Metric names of the actors crate and the events that emit them. Labels are bounded: job
//! kinds and statuses come from fixed sets, engines from the configured models.

use std::time::Duration;

use tracing::{debug, info, warn};

pub const JOBS_TOTAL: &str = "bulwark_jobs_total";
pub const JOB_DURATION_SECONDS: &str = "bulwark_job_duration_seconds";
pub const QUEUE_JOBS: &str = "bulwark_queue_jobs";
pub const JOBS_PRUNED_TOTAL: &str = "bulwark_jobs_pruned_total";
pub const JOB_RESULTS_EXPIRED_TOTAL: &str = "bulwark_job_results_expired_total";
pub const KIND_PAUSED: &str = "bulwark_kind_paused";
pub const KIND_LIMIT: &str = "bulwark_kind_limit";
pub const JOB_WAITS_RESOLVED_TOTAL: &str = "bulwark_job_waits_resolved_total";
pub const JOB_CANCEL_SIGNALS_TOTAL: &str = "bulwark_job_cancel_signals_total";
pub const SENTIMENT_TEXTS_TOTAL: &str = "bulwark_sentiment_texts_total";
pub const SENTIMENT_REQUEST_SECONDS: &str = "bulwark_sentiment_request_duration_seconds";
pub const SENTIMENT_REJECTED_TOTAL: &str = "bulwark_sentiment_rejected_total";

/// How one job attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    Succeeded,
    /// Failed with a retriable error and was queued again.
    Retried,
    Failed,
    Dead,
    /// Stopped (or never run) because its cancel was asked for.
    Cancelled,
    /// The node lost its lease before it could record the outcome; another node has the job.
    LeaseLost,
}

impl JobOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Succeeded => "succeeded",
            JobOutcome::Retried => "retried",
            JobOutcome::Failed => "failed",
            JobOutcome::Dead => "dead",
            JobOutcome::Cancelled => "cancelled",
            JobOutcome::LeaseLost => "lease_lost",
        }
    }
}

/// A job attempt finished.
#[derive(Debug)]
pub struct JobAttemptFinished<'a> {
    pub kind: &'a str,
    pub outcome: JobOutcome,
    pub duration: Duration,
}

impl JobAttemptFinished<'_> {
    pub fn emit(&self) {
        let outcome = self.outcome.as_str();
        match self.outcome {
            JobOutcome::Succeeded | JobOutcome::Retried | JobOutcome::Cancelled => {
                debug!(
                    kind = self.kind,
                    outcome,
                    duration_ms = self.duration.as_millis() as u64,
                    "job attempt finished"
                );
            }
            JobOutcome::Failed | JobOutcome::Dead | JobOutcome::LeaseLost => {
                warn!(
                    kind = self.kind,
                    outcome,
                    duration_ms = self.duration.as_millis() as u64,
                    "job attempt finished"
                );
            }
        }
        let labels = [
            ("kind", self.kind.to_owned()),
            ("outcome", outcome.to_owned()),
        ];
        metrics::counter!(JOBS_TOTAL, &labels).increment(1);
        metrics::histogram!(JOB_DURATION_SECONDS, &labels).record(self.duration.as_secs_f64());
    }
}

/// The limits this node enforces on its limited kinds, as gauges
/// (`bulwark_kind_limit{kind, limit="max_running"|"max_running_per_node"|"max_starts_per_second"}`),
/// so an operator sees which nodes disagree.
#[derive(Debug)]
pub struct KindLimitsEnforced<'a> {
    pub gates: &'a [bulwark_core::KindGate],
}

impl KindLimitsEnforced<'_> {
    pub fn emit(&self) {
        for gate in self.gates {
            let limits = &gate.limits;
            info!(
                kind = %gate.kind,
                max_running = ?limits.max_running,
                max_running_per_node = ?limits.max_running_per_node,
                max_starts_per_second = ?limits.max_starts_per_second,
                "kind limited"
            );
            let values = [
                ("max_running", limits.max_running.map(f64::from)),
                (
                    "max_running_per_node",
                    limits.max_running_per_node.map(f64::from),
                ),
                ("max_starts_per_second", limits.max_starts_per_second),
            ];
            for (limit, value) in values {
                if let Some(value) = value {
                    metrics::gauge!(KIND_LIMIT, "kind" => gate.kind.clone(), "limit" => limit)
                        .set(value);
                }
            }
        }
    }
}

/// A pass over the jobs waiting for their parents released or cancelled some
/// (`bulwark_job_waits_resolved_total{outcome="released"|"cancelled"}`).
#[derive(Debug)]
pub struct WaitsResolvedEvent<'a> {
    pub resolved: &'a bulwark_store::WaitsResolved,
}

impl WaitsResolvedEvent<'_> {
    pub fn emit(&self) {
        let resolved = self.resolved;
        if resolved.released.is_empty() && resolved.cancelled.is_empty() {
            return;
        }
        info!(
            num_released = resolved.released.len(),
            num_cancelled = resolved.cancelled.len(),
            "job waits resolved"
        );
        for (outcome, job_ids) in [
            ("released", &resolved.released),
            ("cancelled", &resolved.cancelled),
        ] {
            metrics::counter!(JOB_WAITS_RESOLVED_TOTAL, "outcome" => outcome)
                .increment(job_ids.len() as u64);
        }
    }
}

/// The node saw a kind paused or resumed (`bulwark_kind_paused{kind}` is 1 while paused).
#[derive(Debug)]
pub struct KindPauseChanged<'a> {
    pub kind: &'a str,
    pub paused: bool,
}

impl KindPauseChanged<'_> {
    pub fn emit(&self) {
        info!(kind = self.kind, paused = self.paused, "kind pause changed");
        metrics::gauge!(KIND_PAUSED, "kind" => self.kind.to_owned()).set(if self.paused {
            1.0
        } else {
            0.0
        });
    }
}

/// A running job's cancel reached the node running it, which signalled its attempt.
#[derive(Debug)]
pub struct JobCancelSignalled<'a> {
    pub job_id: &'a str,
}

impl JobCancelSignalled<'_> {
    pub fn emit(&self) {
        info!(
            job_id = self.job_id,
            "cancel requested, stopping the running job"
        );
        metrics::counter!(JOB_CANCEL_SIGNALS_TOTAL).increment(1);
    }
}

/// A prune pass deleted a status's expired finished jobs.
#[derive(Debug)]
pub struct JobsPruned {
    pub status: bulwark_store::JobStatus,
    pub num_deleted: u64,
}

impl JobsPruned {
    pub fn emit(&self) {
        if self.num_deleted > 0 {
            info!(
                status = %self.status,
                num_deleted = self.num_deleted,
                "pruned finished jobs past their retention"
            );
        }
        metrics::counter!(JOBS_PRUNED_TOTAL, "status" => self.status.as_str())
            .increment(self.num_deleted);
    }
}

/// The pruner deleted jobs whose result TTL ran out
/// (`bulwark_job_results_expired_total`).
#[derive(Debug)]
pub struct JobResultsExpired {
    pub num_deleted: u64,
}

impl JobResultsExpired {
    pub fn emit(&self) {
        if self.num_deleted > 0 {
            info!(
                num_deleted = self.num_deleted,
                "pruned finished jobs past their result TTL"
            );
        }
        metrics::counter!(JOB_RESULTS_EXPIRED_TOTAL).increment(self.num_deleted);
    }
}

/// A request's texts were scored.
#[derive(Debug)]
pub struct SentimentBatchScored<'a> {
    pub engine: &'a str,
    pub num_texts: usize,
    pub duration: Duration,
}

impl SentimentBatchScored<'_> {
    pub fn emit(&self) {
        let labels = [("engine", self.engine.to_owned())];
        metrics::counter!(SENTIMENT_TEXTS_TOTAL, &labels).increment(self.num_texts as u64);
        metrics::histogram!(SENTIMENT_REQUEST_SECONDS, &labels).record(self.duration.as_secs_f64());
    }
}

/// A sentiment call was turned away before reaching a worker.
#[derive(Debug)]
pub struct SentimentRejected {
    pub reason: &'static str,
}

impl SentimentRejected {
    pub fn emit(&self) {
        debug!(reason = self.reason, "sentiment call rejected");
        metrics::counter!(SENTIMENT_REJECTED_TOTAL, "reason" => self.reason).increment(1);
    }
}

/// Publishes the number of jobs per kind and status.
pub fn record_queue_depth(kind: &str, status: &str, count: i64) {
    metrics::gauge!(QUEUE_JOBS, "kind" => kind.to_owned(), "status" => status.to_owned())
        .set(count as f64);
}

// Scheduler and dead letters (issue #6).

pub const SCHEDULE_LAG_SECONDS: &str = "bulwark_schedule_lag_seconds";
pub const SCHEDULE_RUNS_TOTAL: &str = "bulwark_schedule_runs_total";

/// A schedule slot was recorded: enqueued, deferred, skipped (overlap), missed (misfire), or a
/// run's job finished (succeeded, failed).
#[derive(Debug)]
pub struct ScheduleRunRecorded {
    pub outcome: bulwark_store::RunOutcome,
}

impl ScheduleRunRecorded {
    pub fn emit(&self) {
        self.emit_many(1);
    }

    pub fn emit_many(&self, num_runs: u64) {
        metrics::counter!(SCHEDULE_RUNS_TOTAL, "outcome" => self.outcome.as_str())
            .increment(num_runs);
    }
}

/// A slot's job was created this long after the slot's time.
#[derive(Debug)]
pub struct ScheduleLag {
    pub lag: Duration,
}

impl ScheduleLag {
    pub fn emit(&self) {
        metrics::histogram!(SCHEDULE_LAG_SECONDS).record(self.lag.as_secs_f64());
    }
}

pub const DEAD_LETTERS: &str = "bulwark_dead_letters";
pub const DEAD_LETTERED_TOTAL: &str = "bulwark_dead_lettered_total";
pub const DEAD_LETTERS_RECOVERED_TOTAL: &str = "bulwark_dead_letters_recovered_total";
pub const DEAD_LETTERS_PARKED_TOTAL: &str = "bulwark_dead_letters_parked_total";

/// What happened to a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterEventKind {
    /// A job that could not be done was stored.
    DeadLettered,
    /// Out of retries, or not retriable: it waits for an operator.
    Parked,
}

/// A dead letter was stored or parked.
#[derive(Debug)]
pub struct DeadLetterEvent<'a> {
    pub kind: DeadLetterEventKind,
    /// `local` or a broker queue name: bounded by the job kinds.
    pub queue: &'a str,
    pub job_id: &'a str,
}

impl DeadLetterEvent<'_> {
    pub fn emit(&self) {
        let name = match self.kind {
            DeadLetterEventKind::DeadLettered => {
                warn!(
                    queue = self.queue,
                    job_id = self.job_id,
                    "job dead-lettered"
                );
                DEAD_LETTERED_TOTAL
            }
            DeadLetterEventKind::Parked => {
                warn!(
                    queue = self.queue,
                    job_id = self.job_id,
                    "dead letter parked for an operator"
                );
                DEAD_LETTERS_PARKED_TOTAL
            }
        };
        metrics::counter!(name, "queue" => self.queue.to_owned()).increment(1);
    }

    /// Counts dead letters whose retried or requeued job succeeded.
    pub fn recovered(queue: &str, num_recovered: u64) {
        debug!(queue, num_recovered, "dead letters recovered");
        metrics::counter!(DEAD_LETTERS_RECOVERED_TOTAL, "queue" => queue.to_owned())
            .increment(num_recovered);
    }
}

/// Publishes the number of open (pending, retrying, parked) dead letters of a queue.
pub fn record_dead_letter_depth(queue: &str, depth: i64) {
    metrics::gauge!(DEAD_LETTERS, "queue" => queue.to_owned()).set(depth as f64);
}
