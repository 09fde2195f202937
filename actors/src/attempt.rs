//! The job attempt core: what happens to a job once a transport has claimed it, whatever
//! carried it (the local queue's runner or a broker delivery).
//!
//! 1. [`AttemptCore::execute`] runs the job under `catch_unwind` (a panic is an internal error,
//!    never a crashed runner), or fails it at once when expired leases used up its attempts.
//! 2. [`AttemptCore::decide`] turns the result into a [`Disposition`]: succeeded, retry after a
//!    backoff, or final (`failed` for errors a retry cannot fix, `dead` when attempts ran out).
//! 3. [`AttemptCore::record`] writes it through the transport's [`OutcomeSink`], retrying while
//!    the database is briefly unavailable. If it stays down, the lease expires and another
//!    attempt runs the job: at least once, never lost.
//!
//! [`AttemptCore::run`] does all three and emits the attempt's metric; transports call it and
//! only decide what follows (claim more work, or ack, requeue or publish a broker message).

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use bulwark_core::{ErrorCode, JobError};
use bulwark_store::{Job, JobFailure, JobStatus, OutcomeSink};
use futures::FutureExt;
use serde_json::Value;
use tracing::{Instrument, debug, error, warn};

use crate::JobExecutor;
use crate::job_control::JobControls;
use crate::metrics::{JobAttemptFinished, JobOutcome};

/// How failed attempts are spaced: exponential from `base`, capped at `max`, with full jitter.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// Returns the delay before retrying after attempt number `attempt` (1-based).
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(self.base)
            .with_max_delay(self.max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build();
        delays
            .nth(attempt.saturating_sub(1) as usize)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// What an attempt means for its job.
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    Succeeded(Value),
    /// Run it again after `delay`. `refund_attempt`: the job never ran (the node had no
    /// capacity for it), so the attempt is given back and it never runs out of attempts.
    RetryAfter {
        code: ErrorCode,
        message: String,
        delay: Duration,
        refund_attempt: bool,
    },
    /// Never run again: `failed` (a retry cannot help) or `dead` (attempts ran out).
    Final {
        status: JobStatus,
        code: ErrorCode,
        message: String,
    },
}

impl Disposition {
    /// Returns the outcome reported in metrics when the disposition was stored.
    pub fn outcome(&self) -> JobOutcome {
        match self {
            Disposition::Succeeded(_) => JobOutcome::Succeeded,
            Disposition::RetryAfter { .. } => JobOutcome::Retried,
            Disposition::Final {
                status: JobStatus::Failed,
                ..
            } => JobOutcome::Failed,
            Disposition::Final {
                status: JobStatus::Cancelled,
                ..
            } => JobOutcome::Cancelled,
            Disposition::Final { .. } => JobOutcome::Dead,
        }
    }

    /// Returns the delay before the next attempt, when there is one.
    pub fn retry_delay(&self) -> Option<Duration> {
        match self {
            Disposition::RetryAfter { delay, .. } => Some(*delay),
            _ => None,
        }
    }
}

/// What the attempt core is started with; shared by every attempt of a node.
#[derive(Debug, Clone)]
pub struct AttemptCore {
    pub executor: JobExecutor,
    pub retry: RetryPolicy,
    /// How long an outcome's write is retried while the store is unavailable (half a lease:
    /// the lease must still be held when the write finally lands).
    pub record_deadline: Duration,
    /// Where cancels reach running attempts, and their grace.
    pub controls: JobControls,
}

/// What one attempt did.
#[derive(Debug, Clone)]
pub struct AttemptReport {
    pub disposition: Disposition,
    /// The job as stored; `None` when the lease was lost or the store stayed unavailable (the
    /// job runs again once its lease expires).
    pub stored: Option<Job>,
}

impl AttemptReport {
    /// Returns the outcome as metrics report it.
    pub fn outcome(&self) -> JobOutcome {
        match self.stored {
            Some(_) => self.disposition.outcome(),
            None => JobOutcome::LeaseLost,
        }
    }
}

impl AttemptCore {
    /// Runs a claimed job to a stored outcome: execute, decide, record, and emit the attempt's
    /// metric. `on_executed` is called as soon as the job's code returned, before the write,
    /// so a runner can reuse the slot while the outcome is group-committed.
    pub async fn run(
        &self,
        sink: &dyn OutcomeSink,
        job: &Job,
        on_executed: impl FnOnce(),
    ) -> AttemptReport {
        let span = tracing::debug_span!(
            "job.attempt",
            otel.name = %format_args!("{} attempt", job.kind),
            otel.kind = "internal",
            otel.status_code = tracing::field::Empty,
            job.id = %job.id,
            job.kind = %job.kind,
            job.attempt = job.attempts,
            job.outcome = tracing::field::Empty,
        );
        async {
            let started = Instant::now();
            let result = self.execute(job).await;
            on_executed();
            debug!(ok = result.is_ok(), "job code returned");
            let disposition = self.decide(job, result);
            let stored = self.record(sink, job, &disposition).await;
            debug!(stored = stored.is_some(), "job outcome recorded");
            let report = AttemptReport {
                disposition,
                stored,
            };
            let outcome = report.outcome();
            let span = tracing::Span::current();
            span.record("job.outcome", outcome.as_str());
            if outcome != JobOutcome::Succeeded {
                span.record("otel.status_code", "error");
            }
            JobAttemptFinished {
                kind: &job.kind,
                outcome,
                duration: started.elapsed(),
            }
            .emit();
            report
        }
        .instrument(span)
        .await
    }

    /// Executes the job's code, turning a panic into an internal error. A job claimed again
    /// after lease expiries until its attempts ran out is not run: its worker keeps dying. Nor
    /// is a job whose cancel was asked for. While it runs, its timeout and a cancel stop it:
    /// the execution future is dropped, and its provider calls and its wait for inference with
    /// it. A cancelled job is first given the grace to finish by itself.
    pub async fn execute(&self, job: &Job) -> Result<Value, JobError> {
        if job.attempts > job.max_attempts {
            return Err(JobError::new(
                ErrorCode::InternalError,
                "attempts exhausted by expired leases",
            ));
        }
        if job.cancel_requested_at_ms.is_some() {
            return Err(cancelled("cancelled before this attempt ran"));
        }
        let registration = self.controls.cancels.register(&job.id);
        let execution = self.executor.execute(job, &registration.token);
        let mut execution = std::pin::pin!(AssertUnwindSafe(execution).catch_unwind());
        let timeout_opt = job.timeout_ms.and_then(|ms| u64::try_from(ms).ok());
        let timeout = async {
            match timeout_opt {
                Some(timeout_ms) => tokio::time::sleep(Duration::from_millis(timeout_ms)).await,
                None => std::future::pending().await,
            }
        };
        let outcome = tokio::select! {
            outcome = &mut execution => outcome,
            () = timeout => {
                let timeout_ms = timeout_opt.unwrap_or_default();
                return Err(JobError::new(
                    ErrorCode::JobTimeout,
                    format!("job ran past its timeout of {timeout_ms} ms and was aborted"),
                ));
            }
            () = registration.token.cancelled() => {
                let grace = self.controls.cancel_grace;
                match tokio::time::timeout(grace, &mut execution).await {
                    // Finished within the grace: its work is done and stands.
                    Ok(Ok(Ok(value))) => return Ok(value),
                    Ok(_) => return Err(cancelled("cancelled while running")),
                    Err(_) => {
                        return Err(cancelled(format!(
                            "cancelled while running, aborted after its grace of {} ms",
                            grace.as_millis()
                        )));
                    }
                }
            }
        };
        match outcome {
            Ok(result) => result,
            Err(_) => Err(JobError::new(
                ErrorCode::InternalError,
                "job execution panicked",
            )),
        }
    }

    /// Decides what an attempt's result means for the job: done, retried later, or final.
    pub fn decide(&self, job: &Job, result: Result<Value, JobError>) -> Disposition {
        decide(&self.retry, job, result)
    }

    /// Stores the disposition through `sink`, retrying briefly while the store is unavailable.
    /// Returns the job as stored, or `None` when the lease was lost or the store stayed down.
    pub async fn record(
        &self,
        sink: &dyn OutcomeSink,
        job: &Job,
        disposition: &Disposition,
    ) -> Option<Job> {
        let write = write_of(sink, disposition);
        let mut delay = Duration::from_millis(100);
        let deadline = Instant::now() + self.record_deadline;
        loop {
            let stored = match &write {
                OutcomeWrite::Complete(result) => sink.complete(job, result).await,
                OutcomeWrite::Fail(failure) => sink.fail(job, failure).await,
            };
            match stored {
                Ok(stored) => return stored,
                Err(error) if error.is_retryable() && Instant::now() + delay < deadline => {
                    warn!(%error, "failed to store job outcome, retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(error) => {
                    error!(%error, "failed to store job outcome, the job will run again when its lease expires");
                    return None;
                }
            }
        }
    }
}

/// The row write a disposition stands for.
enum OutcomeWrite<'a> {
    Complete(&'a Value),
    Fail(JobFailure),
}

/// Returns the write of a disposition; the sink says when a retried job's row is runnable.
fn write_of<'a>(sink: &dyn OutcomeSink, disposition: &'a Disposition) -> OutcomeWrite<'a> {
    match disposition {
        Disposition::Succeeded(result) => OutcomeWrite::Complete(result),
        Disposition::RetryAfter {
            code,
            message,
            delay,
            refund_attempt,
        } => OutcomeWrite::Fail(JobFailure {
            code: code.as_str().to_owned(),
            message: message.clone(),
            retry_at_ms: Some(sink.retry_at_ms(*delay)),
            final_status: JobStatus::Dead,
            refund_attempt: *refund_attempt,
        }),
        Disposition::Final {
            status,
            code,
            message,
        } => OutcomeWrite::Fail(JobFailure {
            code: code.as_str().to_owned(),
            message: message.clone(),
            retry_at_ms: None,
            final_status: *status,
            refund_attempt: false,
        }),
    }
}

/// Returns the error a cancelled attempt ends with.
fn cancelled(message: impl Into<String>) -> JobError {
    JobError::new(ErrorCode::Cancelled, message)
}

/// See [`AttemptCore::decide`]; pure, so it is tested without a store.
fn decide(retry: &RetryPolicy, job: &Job, result: Result<Value, JobError>) -> Disposition {
    let error = match result {
        Ok(value) => return Disposition::Succeeded(value),
        Err(error) => error,
    };
    if error.code == ErrorCode::Cancelled {
        return Disposition::Final {
            status: JobStatus::Cancelled,
            code: error.code,
            message: error.message,
        };
    }
    // A node out of capacity never ran the job: it waits without losing an attempt.
    let refund_attempt = error.code == ErrorCode::Overloaded;
    if !error.is_retryable() {
        return Disposition::Final {
            status: JobStatus::Failed,
            code: error.code,
            message: error.message,
        };
    }
    if job.attempts >= job.max_attempts && !refund_attempt {
        return Disposition::Final {
            status: JobStatus::Dead,
            code: error.code,
            message: error.message,
        };
    }
    Disposition::RetryAfter {
        code: error.code,
        message: error.message,
        delay: retry.delay_after(u32::try_from(job.attempts).unwrap_or(1)),
        refund_attempt,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const RETRY: RetryPolicy = RetryPolicy {
        base: Duration::from_millis(100),
        max: Duration::from_secs(2),
    };

    fn job_at(attempts: i32, max_attempts: i32) -> Job {
        Job {
            id: "job-1".to_owned(),
            kind: "sentiment.analyze".to_owned(),
            status: JobStatus::Running,
            attempts,
            max_attempts,
            payload: json!({"texts": ["a"]}),
            result: None,
            error_code: None,
            error_message: None,
            request_id: None,
            idempotency_key: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            run_at_ms: 0,
            started_at_ms: None,
            finished_at_ms: None,
            lease_owner: Some("node".to_owned()),
            lease_expires_at_ms: Some(1),
            trace_id: None,
            priority: bulwark_store::DEFAULT_PRIORITY,
            timeout_ms: None,
            cancel_requested_at_ms: None,
            parked_at_ms: None,
            attempt_started_at_ms: None,
            attempt_node: None,
            progress: None,
            result_ttl_ms: None,
        }
    }

    /// Proves retry delays stay within the cap and grow with the attempt number on average.
    #[test]
    fn retry_delays_are_bounded_and_grow() {
        for attempt in 1..20 {
            assert!(RETRY.delay_after(attempt) <= Duration::from_secs(2));
        }
        let average = |attempt| {
            (0..200)
                .map(|_| RETRY.delay_after(attempt).as_secs_f64())
                .sum::<f64>()
                / 200.0
        };
        assert!(average(4) > average(1), "later attempts wait longer");
    }

    /// Proves the decision table: success, a permanent error, a retryable error with attempts
    /// left and without, and an overloaded node that gives the attempt back even on the last.
    #[test]
    fn outcomes_are_decided_by_error_kind_and_attempts_left() {
        let success = decide(&RETRY, &job_at(1, 3), Ok(json!({"ok": true})));
        assert_eq!(success, Disposition::Succeeded(json!({"ok": true})));
        assert_eq!(success.outcome(), JobOutcome::Succeeded);

        let invalid = JobError::new(ErrorCode::ValidationFailed, "texts: empty");
        let failed = decide(&RETRY, &job_at(1, 3), Err(invalid));
        assert_eq!(
            failed,
            Disposition::Final {
                status: JobStatus::Failed,
                code: ErrorCode::ValidationFailed,
                message: "texts: empty".to_owned(),
            }
        );
        assert_eq!(failed.outcome(), JobOutcome::Failed);

        let timeout = || JobError::new(ErrorCode::UpstreamTimeout, "slow");
        let retried = decide(&RETRY, &job_at(2, 3), Err(timeout()));
        let delay = retried.retry_delay().expect("retried");
        assert!(delay <= RETRY.max, "{delay:?}");
        assert_eq!(retried.outcome(), JobOutcome::Retried);

        let dead = decide(&RETRY, &job_at(3, 3), Err(timeout()));
        assert_eq!(dead.outcome(), JobOutcome::Dead);
        assert_eq!(dead.retry_delay(), None);

        let cancelled = decide(&RETRY, &job_at(1, 3), Err(cancelled("stop")));
        assert_eq!(cancelled.outcome(), JobOutcome::Cancelled);
        assert_eq!(cancelled.retry_delay(), None);

        let overloaded = JobError::new(ErrorCode::Overloaded, "no capacity");
        let waits = decide(&RETRY, &job_at(3, 3), Err(overloaded));
        assert!(
            matches!(
                waits,
                Disposition::RetryAfter {
                    refund_attempt: true,
                    ..
                }
            ),
            "{waits:?}"
        );
    }
}
