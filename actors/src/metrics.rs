//! Metric names of the actors crate and the events that emit them. Labels are bounded: job
//! kinds and statuses come from fixed sets, engines from the configured models.

use std::time::Duration;

use bulwark_core::{
    FAST_SECONDS_BUCKETS, LAG_SECONDS_BUCKETS, MetricSpec, MetricUnit, SLOW_SECONDS_BUCKETS,
};
use tracing::{debug, info, warn};

pub const JOBS_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_jobs_total",
    "Job attempts finished, by kind and outcome (succeeded, retried, failed, dead, cancelled, lease_lost)",
).with_labels(&["kind", "outcome"]);
pub const JOB_DURATION_SECONDS: MetricSpec = MetricSpec::histogram(
    "bulwark_job_duration_seconds",
    MetricUnit::Seconds,
    SLOW_SECONDS_BUCKETS,
    "How long a job attempt ran, from its start to its outcome",
)
.with_labels(&["kind", "outcome"]);
pub const QUEUE_JOBS: MetricSpec = MetricSpec::gauge(
    "bulwark_queue_jobs",
    MetricUnit::Count,
    "Jobs queued or running per kind, cluster-wide, as this node last read them from the store (0 once a pair empties)",
).with_labels(&["kind", "status"]);
pub const JOBS_PRUNED_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_jobs_pruned_total",
    "Finished jobs deleted past their retention, by status",
)
.with_labels(&["status"]);
pub const JOB_RESULTS_EXPIRED_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_job_results_expired_total",
    "Finished jobs deleted because their result TTL ran out",
);
pub const KIND_PAUSED: MetricSpec = MetricSpec::gauge(
    "bulwark_kind_paused",
    MetricUnit::None,
    "1 while this node sees the kind paused, else 0",
)
.with_labels(&["kind"]);
pub const KIND_LIMIT: MetricSpec = MetricSpec::gauge(
    "bulwark_kind_limit",
    MetricUnit::None,
    "The limits this node enforces on a limited kind (max_running, max_running_per_node, max_starts_per_second)",
).with_labels(&["kind", "limit"]);
pub const JOB_WAITS_RESOLVED_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_job_waits_resolved_total",
    "Jobs waiting on their parents that were released or cancelled",
)
.with_labels(&["outcome"]);
pub const JOB_CANCEL_SIGNALS_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_job_cancel_signals_total",
    "Cancels of running jobs this node signalled to their attempts",
);
pub const SENTIMENT_TEXTS_TOTAL: MetricSpec =
    MetricSpec::counter("bulwark_sentiment_texts_total", "Texts scored, by engine")
        .with_labels(&["engine"]);
pub const SENTIMENT_REQUEST_SECONDS: MetricSpec = MetricSpec::histogram(
    "bulwark_sentiment_request_duration_seconds",
    MetricUnit::Seconds,
    FAST_SECONDS_BUCKETS,
    "How long a sentiment request took to score, queueing included",
)
.with_labels(&["engine"]);
pub const SENTIMENT_REJECTED_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_sentiment_rejected_total",
    "Sentiment calls turned away before inference, by reason",
)
.with_labels(&["reason"]);

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
        metrics::counter!(JOBS_TOTAL.name, &labels).increment(1);
        metrics::histogram!(JOB_DURATION_SECONDS.name, &labels).record(self.duration.as_secs_f64());
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
                    metrics::gauge!(KIND_LIMIT.name, "kind" => gate.kind.clone(), "limit" => limit)
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
            metrics::counter!(JOB_WAITS_RESOLVED_TOTAL.name, "outcome" => outcome)
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
        self.set_gauge();
    }

    /// Sets the gauge only: every kind is reported from the start, paused or not, so alerts
    /// can rule paused kinds out before any pause happened.
    pub fn set_gauge(&self) {
        metrics::gauge!(KIND_PAUSED.name, "kind" => self.kind.to_owned()).set(if self.paused {
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
        metrics::counter!(JOB_CANCEL_SIGNALS_TOTAL.name).increment(1);
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
        metrics::counter!(JOBS_PRUNED_TOTAL.name, "status" => self.status.as_str())
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
        metrics::counter!(JOB_RESULTS_EXPIRED_TOTAL.name).increment(self.num_deleted);
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
        metrics::counter!(SENTIMENT_TEXTS_TOTAL.name, &labels).increment(self.num_texts as u64);
        metrics::histogram!(SENTIMENT_REQUEST_SECONDS.name, &labels)
            .record(self.duration.as_secs_f64());
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
        metrics::counter!(SENTIMENT_REJECTED_TOTAL.name, "reason" => self.reason).increment(1);
    }
}

pub const QUEUE_OLDEST_JOB_AGE_SECONDS: MetricSpec = MetricSpec::gauge(
    "bulwark_queue_oldest_job_age_seconds",
    MetricUnit::Seconds,
    "How long the oldest due queued job of a kind has waited since it became due, cluster-wide (0 when none waits)",
)
.with_labels(&["kind"]);
pub const NODE_HEARTBEAT_SECONDS: MetricSpec = MetricSpec::gauge(
    "bulwark_node_heartbeat_timestamp_seconds",
    MetricUnit::Seconds,
    "Unix time of this node's job runner's last pass over the queue (every 5 s while it works)",
);

/// The job runner read the live jobs: queued and running per kind, and the oldest due job's
/// wait. Every kind is reported, with zeros for the empty ones, so a series drops back to zero
/// when its jobs finish and a dashboard sees every kind from the start.
#[derive(Debug)]
pub struct QueueDepthRead<'a> {
    pub counts: &'a [bulwark_store::LiveCount],
    pub now_ms: i64,
}

impl QueueDepthRead<'_> {
    pub fn emit(&self) {
        for kind in bulwark_core::JobKind::ALL {
            let kind = kind.as_str();
            let mut oldest_due_at_ms_opt = None;
            for status in ["queued", "running"] {
                let count = self
                    .counts
                    .iter()
                    .find(|count| count.kind == kind && count.status == status);
                if let Some(due_at_ms) = count.and_then(|count| count.oldest_due_at_ms) {
                    oldest_due_at_ms_opt = Some(due_at_ms);
                }
                let num_jobs = count.map_or(0, |count| count.count);
                metrics::gauge!(QUEUE_JOBS.name, "kind" => kind, "status" => status)
                    .set(num_jobs as f64);
            }
            let age_ms =
                oldest_due_at_ms_opt.map_or(0, |due_at_ms| (self.now_ms - due_at_ms).max(0));
            metrics::gauge!(QUEUE_OLDEST_JOB_AGE_SECONDS.name, "kind" => kind)
                .set(age_ms as f64 / 1000.0);
        }
    }
}

/// The job runner made its periodic pass; its time is the node's heartbeat.
#[derive(Debug)]
pub struct NodeHeartbeat {
    pub now_ms: i64,
}

impl NodeHeartbeat {
    pub fn emit(&self) {
        metrics::gauge!(NODE_HEARTBEAT_SECONDS.name).set(self.now_ms as f64 / 1000.0);
    }
}

// Node membership: heartbeats, fencing and early reclaim (issue #18).

pub const NODES_FENCED_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_nodes_fenced_total",
    "Silent nodes this node fenced (their heartbeat older than jobs.node_dead_after_ms)",
);
pub const JOBS_RECLAIMED_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_jobs_reclaimed_total",
    "Running jobs of fenced nodes whose leases this node expired, so they ran again before their lease ended",
);
pub const NODE_FENCED_SELF_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_node_fenced_self_total",
    "Times this node found itself fenced by another (it was silent too long) and gave up its attempts",
);
pub const NODE_HEARTBEAT_FAILURES_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_node_heartbeat_failures_total",
    "Heartbeats (or registrations) this node failed to write to the store",
);

/// This node fenced a silent node and expired its leases.
#[derive(Debug)]
pub struct NodesFenced<'a> {
    pub node_id: &'a str,
    pub silent_for_ms: i64,
    pub num_jobs_reclaimed: u64,
}

impl NodesFenced<'_> {
    pub fn emit(&self) {
        warn!(
            fenced_node = self.node_id,
            silent_for_ms = self.silent_for_ms,
            num_jobs_reclaimed = self.num_jobs_reclaimed,
            "fenced a silent node, its jobs run again now"
        );
        metrics::counter!(NODES_FENCED_TOTAL.name).increment(1);
        metrics::counter!(JOBS_RECLAIMED_TOTAL.name).increment(self.num_jobs_reclaimed);
    }
}

/// This node found itself fenced and gave up its work.
#[derive(Debug)]
pub struct NodeFencedSelf<'a> {
    pub fenced_by: &'a str,
    pub num_aborted: usize,
    pub num_released: u64,
}

impl NodeFencedSelf<'_> {
    pub fn emit(&self) {
        tracing::error!(
            fenced_by = self.fenced_by,
            num_aborted = self.num_aborted,
            num_released = self.num_released,
            "this node was fenced as silent, its attempts stopped; registering again"
        );
        metrics::counter!(NODE_FENCED_SELF_TOTAL.name).increment(1);
    }
}

/// A heartbeat or registration could not be written.
#[derive(Debug)]
pub struct NodeHeartbeatFailed;

pub const NODE_CLOCK_OFFSET_SECONDS: MetricSpec = MetricSpec::gauge(
    "bulwark_node_clock_offset_seconds",
    MetricUnit::Seconds,
    "The database's clock minus this machine's wall clock, as of the last heartbeat (the node's \
     clock follows the database's; a large offset means this machine's clock is wrong)",
);

/// The node read the database's clock and follows it.
#[derive(Debug)]
pub struct ClockFollowed {
    /// The database's clock minus the wall clock.
    pub offset_ms: i64,
    /// The step the node's clock just took (0: none).
    pub step_ms: i64,
}

impl ClockFollowed {
    /// A step of a second or more is logged: the wall clock jumped, or the database's did.
    pub fn emit(&self) {
        if self.step_ms.abs() >= 1_000 {
            warn!(
                step_ms = self.step_ms,
                offset_ms = self.offset_ms,
                "this node's clock stepped to follow the database's"
            );
        }
        metrics::gauge!(NODE_CLOCK_OFFSET_SECONDS.name).set(self.offset_ms as f64 / 1000.0);
    }
}

impl NodeHeartbeatFailed {
    pub fn emit(&self) {
        metrics::counter!(NODE_HEARTBEAT_FAILURES_TOTAL.name).increment(1);
    }
}

// Scheduler and dead letters (issue #6).

pub const SCHEDULE_LAG_SECONDS: MetricSpec = MetricSpec::histogram(
    "bulwark_schedule_lag_seconds",
    MetricUnit::Seconds,
    LAG_SECONDS_BUCKETS,
    "How long after its slot's time a schedule's job was created",
);
pub const SCHEDULE_RUNS_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_schedule_runs_total",
    "Schedule slots recorded, by outcome (enqueued, deferred, skipped, missed, succeeded, failed)",
)
.with_labels(&["outcome"]);

/// A schedule slot was recorded: enqueued, deferred, skipped (overlap), missed (misfire), or a
/// run's job finished (succeeded, failed).
#[derive(Debug)]
pub struct ScheduleRunRecorded {
    pub outcome: bulwark_store::RunOutcome,
}

impl ScheduleRunRecorded {
    /// Creates every outcome's series at zero, so `increase()` sees a scheduler's first
    /// misses (a series born at N reads as no increase).
    pub fn register_all() {
        for outcome in bulwark_store::RunOutcome::ALL {
            metrics::counter!(SCHEDULE_RUNS_TOTAL.name, "outcome" => outcome.as_str()).increment(0);
        }
    }

    pub fn emit(&self) {
        self.emit_many(1);
    }

    pub fn emit_many(&self, num_runs: u64) {
        metrics::counter!(SCHEDULE_RUNS_TOTAL.name, "outcome" => self.outcome.as_str())
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
        metrics::histogram!(SCHEDULE_LAG_SECONDS.name).record(self.lag.as_secs_f64());
    }
}

pub const DEAD_LETTERS: MetricSpec = MetricSpec::gauge(
    "bulwark_dead_letters",
    MetricUnit::Count,
    "Open dead letters (pending, retrying, parked) per queue",
)
.with_labels(&["queue"]);
pub const DEAD_LETTERED_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_dead_lettered_total",
    "Jobs that could not be done and were stored as dead letters",
)
.with_labels(&["queue"]);
pub const DEAD_LETTERS_RECOVERED_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_dead_letters_recovered_total",
    "Dead letters whose retried or requeued job succeeded",
)
.with_labels(&["queue"]);
pub const DEAD_LETTERS_PARKED_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_dead_letters_parked_total",
    "Dead letters out of retries (or not retriable), waiting for an operator",
)
.with_labels(&["queue"]);

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
                DEAD_LETTERED_TOTAL.name
            }
            DeadLetterEventKind::Parked => {
                warn!(
                    queue = self.queue,
                    job_id = self.job_id,
                    "dead letter parked for an operator"
                );
                DEAD_LETTERS_PARKED_TOTAL.name
            }
        };
        metrics::counter!(name, "queue" => self.queue.to_owned()).increment(1);
    }

    /// Counts dead letters whose retried or requeued job succeeded.
    pub fn recovered(queue: &str, num_recovered: u64) {
        debug!(queue, num_recovered, "dead letters recovered");
        metrics::counter!(DEAD_LETTERS_RECOVERED_TOTAL.name, "queue" => queue.to_owned())
            .increment(num_recovered);
    }
}

/// Publishes the number of open (pending, retrying, parked) dead letters of a queue.
pub fn record_dead_letter_depth(queue: &str, depth: i64) {
    metrics::gauge!(DEAD_LETTERS.name, "queue" => queue.to_owned()).set(depth as f64);
}

/// Every metric this crate emits, for the recorder's descriptions and `docs/metrics.md`.
pub const METRICS: &[MetricSpec] = &[
    JOBS_TOTAL,
    JOB_DURATION_SECONDS,
    QUEUE_JOBS,
    QUEUE_OLDEST_JOB_AGE_SECONDS,
    NODE_HEARTBEAT_SECONDS,
    NODES_FENCED_TOTAL,
    JOBS_RECLAIMED_TOTAL,
    NODE_FENCED_SELF_TOTAL,
    NODE_HEARTBEAT_FAILURES_TOTAL,
    NODE_CLOCK_OFFSET_SECONDS,
    JOBS_PRUNED_TOTAL,
    JOB_RESULTS_EXPIRED_TOTAL,
    KIND_PAUSED,
    KIND_LIMIT,
    JOB_WAITS_RESOLVED_TOTAL,
    JOB_CANCEL_SIGNALS_TOTAL,
    SENTIMENT_TEXTS_TOTAL,
    SENTIMENT_REQUEST_SECONDS,
    SENTIMENT_REJECTED_TOTAL,
    SCHEDULE_LAG_SECONDS,
    SCHEDULE_RUNS_TOTAL,
    DEAD_LETTERS,
    DEAD_LETTERED_TOTAL,
    DEAD_LETTERS_RECOVERED_TOTAL,
    DEAD_LETTERS_PARKED_TOTAL,
];
