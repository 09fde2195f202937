//! What one delivery goes through: check its size, decode, create or find the job row (a row
//! of another kind or payload is a conflict), run it under a lease unless it already finished,
//! store the outcome, publish the outcome event and the reply (to an allowed `reply_to` only),
//! and only then ack. Every path ends in an ack after something durable happened, a nack with
//! requeue (the message comes back; the delivery limit bounds how often), or a dead-letter
//! publish confirmed before the ack.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bulwark_actors::{AttemptCore, RetryPolicy, validate_job};
use bulwark_core::{TraceContext, now_ms, trace_id_of};
use bulwark_store::{
    DeliveredRow, GatedClaim, InsertOutcome, Job, JobFailure, JobRoute, JobStatus, LeaseRef,
    NewJob, OutcomeSink, Store, StoreError,
};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use lapin::types::AMQPValue;
use serde::Serialize;
use serde_json::Value;
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::envelope::{CONTENT_TYPE_JSON, ENVELOPE_VERSION, Envelope};
use crate::metrics::{GateWaitedOut, MessageRefused, RefusalCause, ReplyToRefused};
use crate::{BrokerPublisher, DeliveryWrites, OutgoingMessage, Topology};

/// The header a dead-lettered message carries: why Bulwark refused it.
pub const REJECT_REASON_HEADER: &str = "x-bulwark-reject-reason";

/// The header of an outcome event whose message's `reply_to` was not allowed: why no reply
/// was sent.
pub const REPLY_REFUSED_HEADER: &str = "x-bulwark-reply-refused";

/// Everything a delivery needs; shared by a consumer's delivery tasks and its restarts.
#[derive(Debug, Clone)]
pub struct DeliveryContext {
    pub store: Store,
    /// The lookup, insert and completion of deliveries, group-committed.
    pub writes: DeliveryWrites,
    /// Runs, decides and records each attempt, as the local queue's runner does.
    pub attempt: AttemptCore,
    pub publisher: Arc<BrokerPublisher>,
    /// Lease owner of jobs this node runs.
    pub owner: String,
    pub lease: Duration,
    /// Attempts, priority and timeout of jobs created from messages, by kind.
    pub job_defaults: bulwark_core::JobDefaults,
}

impl DeliveryContext {
    fn retry(&self) -> &RetryPolicy {
        &self.attempt.retry
    }

    fn outcomes(&self) -> DeliveryOutcomes<'_> {
        DeliveryOutcomes { context: self }
    }
}

/// Where a delivered job's outcome is written: completions group-committed with the other
/// deliveries' under this node's lease; a retried job's row is runnable at once, because the
/// message itself waits out the delay before it is requeued.
#[derive(Debug)]
struct DeliveryOutcomes<'a> {
    context: &'a DeliveryContext,
}

#[async_trait]
impl OutcomeSink for DeliveryOutcomes<'_> {
    async fn complete(&self, job: &Job, result: &Value) -> Result<Option<Job>, StoreError> {
        self.context
            .writes
            .complete(LeaseRef::of(job, &self.context.owner), result.clone())
            .await
    }

    async fn fail(&self, job: &Job, failure: &JobFailure) -> Result<Option<Job>, StoreError> {
        self.context
            .store
            .fail_job(LeaseRef::of(job, &self.context.owner), failure)
            .await
    }

    fn retry_at_ms(&self, _delay: Duration) -> i64 {
        now_ms()
    }
}

/// The outcome event published to `<ns>.events` and to `reply_to`.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct JobEvent {
    pub v: u32,
    pub job_id: String,
    pub kind: String,
    /// `succeeded`, `failed`, `dead` or `cancelled`.
    pub status: String,
    pub attempts: i32,
    pub result: Option<Value>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub idempotency_key: Option<String>,
}

impl JobEvent {
    fn from_job(job: &Job) -> Self {
        JobEvent {
            v: ENVELOPE_VERSION,
            job_id: job.id.clone(),
            kind: job.kind.clone(),
            status: job.status.as_str().to_owned(),
            attempts: job.attempts,
            result: job.result.clone(),
            error_code: job.error_code.clone(),
            error_message: job.error_message.clone(),
            idempotency_key: job.idempotency_key.clone(),
        }
    }
}

/// The message properties a delivery's processing uses.
#[derive(Debug, Clone, Default)]
struct MessageMeta {
    message_id: Option<String>,
    content_type: Option<String>,
    request_id: Option<String>,
    traceparent: Option<String>,
    tracestate: Option<String>,
    reply_to: Option<String>,
    /// Why `reply_to` is not replied to, when it is set and not allowed.
    reply_refused: Option<String>,
    correlation_id: Option<String>,
}

impl MessageMeta {
    fn of(delivery: &Delivery) -> Self {
        let properties = &delivery.properties;
        let header = |name: &str| {
            let headers = properties.headers().as_ref()?;
            match headers.inner().get(name)? {
                AMQPValue::LongString(text) => Some(text.to_string()),
                AMQPValue::ShortString(text) => Some(text.as_str().to_owned()),
                _ => None,
            }
        };
        MessageMeta {
            message_id: properties
                .message_id()
                .as_ref()
                .map(|id| id.as_str().to_owned()),
            content_type: properties
                .content_type()
                .as_ref()
                .map(|text| text.as_str().to_owned()),
            request_id: header("x-request-id"),
            traceparent: header("traceparent"),
            tracestate: header("tracestate"),
            reply_to: properties
                .reply_to()
                .as_ref()
                .map(|text| text.as_str().to_owned()),
            correlation_id: properties
                .correlation_id()
                .as_ref()
                .map(|text| text.as_str().to_owned()),
            reply_refused: None,
        }
    }

    /// Returns the `reply_to` the outcome is sent to: set and allowed.
    fn reply_target(&self) -> Option<&str> {
        match self.reply_refused {
            Some(_) => None,
            None => self.reply_to.as_deref(),
        }
    }
}

/// How a delivery ends.
enum Settle {
    Ack,
    /// Back to the queue (counted against the delivery limit), after `delay`.
    Requeue {
        delay: Duration,
    },
    /// Refused for good: dead-lettered with the reason.
    DeadLetter(Refusal),
}

/// Why a message is dead-lettered.
struct Refusal {
    cause: RefusalCause,
    /// Goes into [`REJECT_REASON_HEADER`].
    reason: String,
}

impl Settle {
    fn refuse(cause: RefusalCause, reason: impl Into<String>) -> Settle {
        Settle::DeadLetter(Refusal {
            cause,
            reason: reason.into(),
        })
    }
}

/// Processes one delivery of queue `kind` to the end, acking or nacking it.
pub(crate) async fn process_delivery(
    context: Arc<DeliveryContext>,
    kind: String,
    delivery: Delivery,
) {
    let mut meta = MessageMeta::of(&delivery);
    // A consumer span (OpenTelemetry's messaging conventions), child of the publisher's span
    // the message's `traceparent` names; a redelivery is also linked to it.
    let span = info_span!(
        "delivery",
        otel.name = %format_args!("{} process", delivery.routing_key),
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        messaging.operation.type = "process",
        messaging.operation.name = "deliver",
        messaging.destination.name = %delivery.exchange,
        messaging.rabbitmq.destination.routing_key = %delivery.routing_key,
        messaging.message.id = meta.message_id.as_deref().unwrap_or(""),
        kind = %kind,
        message_id = meta.message_id.as_deref().unwrap_or(""),
        request_id = meta.request_id.as_deref().unwrap_or(""),
        traceparent = meta.traceparent.as_deref().unwrap_or(""),
        trace_id = meta.traceparent.as_deref().and_then(trace_id_of).unwrap_or_default(),
        redelivered = delivery.redelivered,
    );
    let inbound = TraceContext {
        traceparent: meta.traceparent.clone(),
        tracestate: meta.tracestate.clone(),
    };
    inbound.adopt_as_parent(&span);
    if delivery.redelivered {
        inbound.link_from(&span);
    }
    async {
        info!(
            message_id = meta.message_id.as_deref().unwrap_or(""),
            request_id = meta.request_id.as_deref().unwrap_or(""),
            traceparent = meta.traceparent.as_deref().unwrap_or(""),
            "processing delivery"
        );
        if let Some(reply_to) = &meta.reply_to {
            let topology = &context.publisher.settings().topology;
            let limits = &context.publisher.settings().limits;
            if let Err(reason) = limits.check_reply_to(topology, reply_to) {
                ReplyToRefused {
                    kind: &kind,
                    reason: &reason,
                }
                .emit();
                meta.reply_refused = Some(reason);
            }
        }
        let settle = settle_delivery(&context, &kind, &meta, &delivery.data).await;
        finish(&context, &kind, &meta, &delivery, settle).await;
        debug!("delivery settled");
    }
    .instrument(span)
    .await;
}

async fn finish(
    context: &DeliveryContext,
    kind: &str,
    meta: &MessageMeta,
    delivery: &Delivery,
    settle: Settle,
) {
    let settled = match settle {
        Settle::Ack => delivery.ack(BasicAckOptions::default()).await,
        Settle::Requeue { delay } => {
            tokio::time::sleep(delay).await;
            delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await
        }
        Settle::DeadLetter(refusal) => {
            MessageRefused {
                kind,
                cause: refusal.cause,
                reason: &refusal.reason,
            }
            .emit();
            match dead_letter(context, kind, meta, delivery, &refusal.reason).await {
                Ok(()) => delivery.ack(BasicAckOptions::default()).await,
                Err(error) => {
                    // RabbitMQ dead-letters a rejected message itself (with `x-death`), only
                    // without our reason header.
                    warn!(%error, "failed to publish to the dead-letter exchange, rejecting");
                    delivery.reject(BasicRejectOptions { requeue: false }).await
                }
            }
        }
    };
    if let Err(error) = settled {
        // The channel is gone: the message comes back to a consumer, which finds the job's
        // stored outcome and does not run it again.
        warn!(%error, "failed to settle delivery, it will be redelivered");
    }
}

/// Publishes the refused message to `<ns>.dlx` (routing key = kind) with the reason header.
async fn dead_letter(
    context: &DeliveryContext,
    kind: &str,
    meta: &MessageMeta,
    delivery: &Delivery,
    reason: &str,
) -> Result<(), crate::BrokerError> {
    let exchange = context.publisher.settings().topology.dead_letter_exchange();
    context
        .publisher
        .publish(&OutgoingMessage {
            exchange: &exchange,
            routing_key: kind,
            body: &delivery.data,
            content_type: meta.content_type.as_deref().unwrap_or(CONTENT_TYPE_JSON),
            message_id: meta.message_id.as_deref(),
            correlation_id: meta.correlation_id.as_deref(),
            reply_to: meta.reply_to.as_deref(),
            headers: vec![(REJECT_REASON_HEADER, reason.to_owned())],
            request_id: meta.request_id.as_deref(),
            traceparent: meta.traceparent.as_deref(),
            tracestate: meta.tracestate.as_deref(),
            mandatory: true,
        })
        .await
}

async fn settle_delivery(
    context: &DeliveryContext,
    kind: &str,
    meta: &MessageMeta,
    body: &[u8],
) -> Settle {
    // Checked before anything reads the body: a hostile size costs nothing but this compare.
    if let Some(reason) = context.publisher.settings().limits.oversized(body.len()) {
        return Settle::refuse(RefusalCause::TooLarge, reason);
    }
    let envelope = match Envelope::decode(meta.content_type.as_deref(), body) {
        Ok(envelope) => envelope,
        Err(error) => return Settle::refuse(RefusalCause::Invalid, error.0),
    };
    if envelope.kind != kind {
        return Settle::refuse(
            RefusalCause::Invalid,
            format!(
                "kind: message of kind `{}` on the queue of `{kind}`",
                envelope.kind
            ),
        );
    }
    if let Err(error) = validate_job(kind, &envelope.payload) {
        return Settle::refuse(RefusalCause::Invalid, error.message);
    }
    match envelope.deadline_time() {
        // The node's clock (the database's), not the wall clock: see `now_ms`.
        Ok(Some(deadline)) if deadline < node_time() => {
            return Settle::refuse(
                RefusalCause::Invalid,
                format!(
                    "deadline: passed ({})",
                    envelope.deadline.as_deref().unwrap_or_default()
                ),
            );
        }
        Ok(_) => {}
        Err(error) => return Settle::refuse(RefusalCause::Invalid, error.0),
    }
    if let Some(settle) = hold_until_due(context, &envelope, meta).await {
        return settle;
    }
    if context.attempt.controls.paused.contains(kind) {
        match park(context, &envelope, meta).await {
            Ok(true) => return Settle::Ack,
            Ok(false) => {}
            Err(error) => {
                warn!(%error, "failed to park the job of a paused kind, requeueing");
                return Settle::Requeue {
                    delay: context.retry().delay_after(1),
                };
            }
        }
    }
    if let Some(gate) = context.job_defaults.gate_of(kind) {
        return run_gated(context, &gate, &envelope, meta).await;
    }
    match find_or_create(context, &envelope, meta).await {
        Ok(DeliveredJob::Claimed(job)) => run_claimed(context, job, meta).await,
        Ok(DeliveredJob::Found(job)) => match conflict_of(&job, &envelope) {
            Some(reason) => Settle::refuse(RefusalCause::Conflict, reason),
            None => run_to_outcome(context, job, meta).await,
        },
        Err(error) => {
            warn!(%error, "failed to store the job of a delivery, requeueing");
            Settle::Requeue {
                delay: context.retry().delay_after(1),
            }
        }
    }
}

/// Returns why a message cannot be the existing job it names (by id or idempotency key): the
/// job is of another kind or has another payload. Such a message is refused like HTTP's 409,
/// never answered with that job's outcome, which would hand it to whoever knows a job's id.
/// The node's clock as a `SystemTime`, for comparing with an envelope's deadline.
fn node_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(now_ms()).unwrap_or(0))
}

fn conflict_of(job: &Job, envelope: &Envelope) -> Option<String> {
    let what = if job.kind != envelope.kind {
        "kind"
    } else if !same_json(&job.payload, &envelope.payload) {
        "payload"
    } else {
        return None;
    };
    let key_name = if job.id == envelope.id {
        "id"
    } else {
        "idempotency key"
    };
    Some(format!(
        "conflict: the message's {key_name} names an existing job of another {what} (409)"
    ))
}

/// Returns true when two JSON values are the same document. Numbers compare by value (a
/// payload stored as text and read back may print `1.0` as `1`, or differ in the last bit of a
/// float), objects by their entries whatever the order.
fn same_json(left: &Value, right: &Value) -> bool {
    match (left, right) {
        (Value::Number(left), Value::Number(right)) => {
            left == right
                || match (left.as_f64(), right.as_f64()) {
                    (Some(left), Some(right)) => {
                        (left - right).abs() <= f64::EPSILON * left.abs().max(right.abs()) * 4.0
                    }
                    _ => false,
                }
        }
        (Value::Array(left), Value::Array(right)) => {
            left.len() == right.len()
                && left
                    .iter()
                    .zip(right)
                    .all(|(left, right)| same_json(left, right))
        }
        (Value::Object(left), Value::Object(right)) => {
            left.len() == right.len()
                && left
                    .iter()
                    .all(|(name, left)| right.get(name).is_some_and(|right| same_json(left, right)))
        }
        _ => left == right,
    }
}

/// The job row of a delivered message.
enum DeliveredJob {
    /// It existed: finished (its outcome is published again) or to be claimed.
    Found(Job),
    /// This delivery created it, already claimed by this node.
    Claimed(Job),
}

/// Parks the job of a message whose kind is paused (or whose gate stayed full): its row is
/// stored queued in the outbox, where the republisher leaves it until the kind is resumed (or
/// publishes it again at once), so the message is acked without running and without counting
/// a delivery. Returns false when the job is running or finished
/// already (the delivery goes on as any other).
async fn park(
    context: &DeliveryContext,
    envelope: &Envelope,
    meta: &MessageMeta,
) -> Result<bool, bulwark_store::StoreError> {
    let parked = context
        .store
        .park_delivered_job(&envelope.id, &new_job_of(context, envelope, meta))
        .await?;
    if let Some(job) = &parked {
        info!(job_id = %job.id, "job parked in the outbox");
    }
    Ok(parked.is_some())
}

/// How long a delivery of a limited kind waits for its gate before its job is parked in the
/// outbox (and the message acked), well inside RabbitMQ's consumer timeout: the republisher
/// publishes it again, and that delivery waits its turn in the same way.
const GATE_WAIT: Duration = Duration::from_secs(20);

/// The first pause between two looks at a full gate; it doubles up to [`GATE_POLL_MAX`].
const GATE_POLL_MIN: Duration = Duration::from_millis(50);
const GATE_POLL_MAX: Duration = Duration::from_millis(500);

/// Runs the job of a limited kind's message once the kind's gate in the store lets it start
/// (its limits hold across every node): the row is stored unclaimed, then claimed only
/// through the gate. While the gate is full the delivery waits, holding its message (the
/// consumer's prefetch bounds how many wait); after [`GATE_WAIT`] the job is parked in the
/// outbox and the message acked, without counting a delivery.
async fn run_gated(
    context: &DeliveryContext,
    gate: &bulwark_core::KindGate,
    envelope: &Envelope,
    meta: &MessageMeta,
) -> Settle {
    let job = match stored_unclaimed(context, envelope, meta).await {
        Ok(job) => job,
        Err(error) => {
            warn!(%error, "failed to store the job of a delivery, requeueing");
            return Settle::Requeue {
                delay: context.retry().delay_after(1),
            };
        }
    };
    if let Some(reason) = conflict_of(&job, envelope) {
        return Settle::refuse(RefusalCause::Conflict, reason);
    }
    let wait_deadline = Instant::now() + GATE_WAIT;
    let mut pause = GATE_POLL_MIN;
    loop {
        let lease_until = now_ms() + context.lease.as_millis() as i64;
        match context
            .store
            .claim_gated_job(&job.id, &context.owner, lease_until, gate)
            .await
        {
            Ok(GatedClaim::Claimed(claimed)) => return run_claimed(context, claimed, meta).await,
            Ok(GatedClaim::NotClaimable(found)) if found.status.is_terminal() => {
                info!(job_id = %found.id, status = %found.status, "job already finished, publishing its stored outcome");
                return publish_outcome(context, &found, meta).await;
            }
            // Full, or running under another consumer's live lease (a duplicate delivery):
            // either way, wait.
            Ok(GatedClaim::Full | GatedClaim::NotClaimable(_)) => {}
            Err(error) => {
                warn!(%error, "failed to claim the job through its gate, requeueing");
                return Settle::Requeue {
                    delay: context.retry().delay_after(1),
                };
            }
        }
        if Instant::now() >= wait_deadline {
            return park_waiting(context, envelope, meta).await;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(GATE_POLL_MAX);
    }
}

/// Parks the job of a delivery that waited too long for its gate (see [`run_gated`]).
async fn park_waiting(
    context: &DeliveryContext,
    envelope: &Envelope,
    meta: &MessageMeta,
) -> Settle {
    match park(context, envelope, meta).await {
        Ok(true) => {
            GateWaitedOut {
                kind: &envelope.kind,
            }
            .emit();
            Settle::Ack
        }
        // Running elsewhere under a live lease: the message comes back once it may have ended.
        Ok(false) => Settle::Requeue {
            delay: context.retry().delay_after(1),
        },
        Err(error) => {
            warn!(%error, "failed to park a job waiting for its gate, requeueing");
            Settle::Requeue {
                delay: context.retry().delay_after(1),
            }
        }
    }
}

/// Returns the row of a message's job, created unclaimed when there is none (as published:
/// the message is on the broker): the row the intake published (message id = job id), else
/// the one stored under the message's idempotency key, else a new one.
async fn stored_unclaimed(
    context: &DeliveryContext,
    envelope: &Envelope,
    meta: &MessageMeta,
) -> Result<Job, StoreError> {
    if let Some(job) = context
        .writes
        .find(&envelope.id, envelope.job_key())
        .await?
    {
        return Ok(job);
    }
    let outcome = context
        .store
        .insert_routed_job(
            &new_job_of(context, envelope, meta),
            JobRoute::BrokerPublished,
        )
        .await?;
    Ok(match outcome {
        InsertOutcome::Created(job) | InsertOutcome::Existing(job) => job,
    })
}

/// Stores the job of a message whose `run_at` is still ahead in the outbox, due then, so the
/// message is acked and the republisher publishes the job once it is due (as a delayed HTTP
/// submission is). Returns `None` (the delivery goes on as any other) when the message is due,
/// or its job exists already: the stored row, not the message, says when it runs.
async fn hold_until_due(
    context: &DeliveryContext,
    envelope: &Envelope,
    meta: &MessageMeta,
) -> Option<Settle> {
    let run_at_ms = envelope.run_at_ms().ok().flatten()?;
    if run_at_ms <= now_ms() {
        return None;
    }
    let requeue = |error: StoreError| {
        warn!(%error, "failed to store a job not due yet, requeueing");
        Some(Settle::Requeue {
            delay: context.retry().delay_after(1),
        })
    };
    match context.writes.find(&envelope.id, envelope.job_key()).await {
        Ok(Some(_)) => return None,
        Ok(None) => {}
        Err(error) => return requeue(error),
    }
    let new_job = new_job_of(context, envelope, meta);
    match context
        .store
        .insert_routed_job(&new_job, JobRoute::BrokerPending)
        .await
    {
        Ok(InsertOutcome::Created(job)) => {
            info!(job_id = %job.id, run_at_ms, "job not due yet, held in the outbox");
            Some(Settle::Ack)
        }
        Ok(InsertOutcome::Existing(_)) => None,
        Err(error) => requeue(error),
    }
}

/// Returns the job a message asks for, as its row is created.
fn new_job_of(context: &DeliveryContext, envelope: &Envelope, meta: &MessageMeta) -> NewJob {
    NewJob {
        kind: envelope.kind.clone(),
        payload: envelope.payload.clone(),
        idempotency_key: Some(envelope.job_key().to_owned()),
        request_id: meta.request_id.clone(),
        trace_id: meta.traceparent.as_deref().and_then(trace_id_of),
        max_attempts: context.job_defaults.max_attempts_of(&envelope.kind),
        priority: envelope
            .priority
            .unwrap_or_else(|| context.job_defaults.priority_of(&envelope.kind)),
        run_at_ms: envelope.run_at_ms().ok().flatten(),
        timeout_ms: envelope
            .timeout_ms
            .or_else(|| context.job_defaults.timeout_ms_of(&envelope.kind)),
        result_ttl_ms: None,
    }
}

/// Returns the job row of a message in one statement, shared with the deliveries in flight: a
/// new row created already claimed, else the row the intake published (message id = job id) or
/// the row stored under the message's idempotency key.
async fn find_or_create(
    context: &DeliveryContext,
    envelope: &Envelope,
    meta: &MessageMeta,
) -> Result<DeliveredJob, bulwark_store::StoreError> {
    let key = envelope.job_key();
    let new_job = new_job_of(context, envelope, meta);
    let lease_until = now_ms() + context.lease.as_millis() as i64;
    let delivered = context
        .writes
        .create_or_find(&envelope.id, new_job, &context.owner, lease_until)
        .await?;
    match delivered {
        Some(DeliveredRow::Created(job)) => {
            debug!(job_id = %job.id, "created the message's job row, claimed");
            return Ok(DeliveredJob::Claimed(job));
        }
        Some(DeliveredRow::Existing(job)) => {
            debug!(job_id = %job.id, "found the message's job row");
            return Ok(DeliveredJob::Found(job));
        }
        None => {}
    }
    // Another node's delivery of the same key committed while the statement ran.
    let found = context.writes.find(&envelope.id, key).await?;
    debug!(found = found.is_some(), "looked up the message's job row");
    match found {
        Some(job) => Ok(DeliveredJob::Found(job)),
        None => Err(bulwark_store::StoreError::Invariant(format!(
            "job of message {} neither created nor found",
            envelope.id
        ))),
    }
}

/// Runs the job unless it already finished, stores the outcome and publishes the event.
async fn run_to_outcome(context: &DeliveryContext, job: Job, meta: &MessageMeta) -> Settle {
    let job_id = job.id.clone();
    let mut current = job;
    // Waits at most one lease (plus margin) for another holder of the job to finish it.
    let wait_deadline = Instant::now() + context.lease + Duration::from_secs(5);
    loop {
        if current.status.is_terminal() {
            info!(job_id = %current.id, status = %current.status, "job already finished, publishing its stored outcome");
            return publish_outcome(context, &current, meta).await;
        }
        let lease_until = now_ms() + context.lease.as_millis() as i64;
        match context
            .store
            .claim_job_by_id(&job_id, &context.owner, lease_until)
            .await
        {
            Ok(Some(claimed)) => return run_claimed(context, claimed, meta).await,
            Ok(None) => {}
            Err(error) => {
                warn!(%error, "failed to claim the job, requeueing");
                return Settle::Requeue {
                    delay: context.retry().delay_after(1),
                };
            }
        }
        // Another consumer holds a live lease (a duplicate delivery, or the same message before
        // a connection loss): wait for its outcome, or for the lease to expire.
        if Instant::now() > wait_deadline {
            return Settle::Requeue {
                delay: Duration::from_millis(100),
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        match context.store.get_job(&job_id).await {
            Ok(Some(job)) => current = job,
            Ok(None) => {
                error!(job_id, "job row vanished");
                return Settle::refuse(
                    RefusalCause::Internal,
                    format!("job row {job_id} vanished"),
                );
            }
            Err(error) => {
                warn!(%error, "failed to read the job, requeueing");
                return Settle::Requeue {
                    delay: context.retry().delay_after(1),
                };
            }
        }
    }
}

async fn run_claimed(context: &DeliveryContext, job: Job, meta: &MessageMeta) -> Settle {
    let span = info_span!("job", job_id = %job.id, attempt = job.attempts);
    async {
        // Renews until the job's code returns, and stops with the delivery if it is dropped.
        let renewer = AbortOnDropHandle::new(spawn_lease_renewal(context, &job.id));
        let report = context
            .attempt
            .run(&context.outcomes(), &job, || renewer.abort())
            .await;
        let Some(stored) = report.stored else {
            return Settle::Requeue {
                delay: context.retry().delay_after(1),
            };
        };
        if let Some(delay) = report.disposition.retry_delay() {
            info!(
                delay_ms = delay.as_millis() as u64,
                "job attempt failed, retrying"
            );
            return Settle::Requeue { delay };
        }
        publish_outcome(context, &stored, meta).await
    }
    .instrument(span)
    .await
}

fn spawn_lease_renewal(context: &DeliveryContext, job_id: &str) -> tokio::task::JoinHandle<()> {
    let store = context.store.clone();
    let owner = context.owner.clone();
    let lease = context.lease;
    let job_ids = vec![job_id.to_owned()];
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(lease / 3);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let lease_until = now_ms() + lease.as_millis() as i64;
            if let Err(error) = store.renew_leases(&job_ids, &owner, lease_until).await {
                warn!(%error, "failed to renew a broker job's lease");
            }
        }
    })
}

/// Publishes the finished job's event to `<ns>.events` and, when asked and allowed, to
/// `reply_to` with the message's `correlation_id`. Acks only when both were confirmed. An event
/// whose message's `reply_to` was refused carries the reason in [`REPLY_REFUSED_HEADER`].
async fn publish_outcome(context: &DeliveryContext, job: &Job, meta: &MessageMeta) -> Settle {
    let event = JobEvent::from_job(job);
    let body = match serde_json::to_vec(&event) {
        Ok(body) => body,
        Err(error) => {
            return Settle::refuse(
                RefusalCause::Internal,
                format!("failed to encode event: {error}"),
            );
        }
    };
    let events_exchange = context.publisher.settings().topology.events_exchange();
    let routing_key = Topology::event_routing_key(job.status == JobStatus::Succeeded, &job.kind);
    let correlation_id = meta
        .correlation_id
        .as_deref()
        .or(meta.message_id.as_deref());
    let event_headers: Vec<(&str, String)> = match &meta.reply_refused {
        Some(reason) => vec![(REPLY_REFUSED_HEADER, reason.clone())],
        None => Vec::new(),
    };
    let mut targets = vec![(
        events_exchange.as_str(),
        routing_key.as_str(),
        event_headers,
    )];
    if let Some(reply_to) = meta.reply_target() {
        targets.push(("", reply_to, Vec::new()));
    }
    for (exchange, key, headers) in targets {
        let published = context
            .publisher
            .publish(&OutgoingMessage {
                exchange,
                routing_key: key,
                body: &body,
                content_type: CONTENT_TYPE_JSON,
                message_id: Some(&job.id),
                correlation_id,
                reply_to: None,
                headers,
                request_id: meta.request_id.as_deref().or(job.request_id.as_deref()),
                traceparent: meta.traceparent.as_deref(),
                tracestate: meta.tracestate.as_deref(),
                mandatory: false,
            })
            .await;
        if let Err(error) = published {
            warn!(%error, "failed to publish the job's outcome, requeueing");
            return Settle::Requeue {
                delay: context.retry().delay_after(1),
            };
        }
    }
    info!(job_id = %job.id, status = %job.status, "job outcome published");
    Settle::Ack
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn job(kind: &str, payload: Value) -> Job {
        Job {
            id: "job-1".to_owned(),
            kind: kind.to_owned(),
            status: JobStatus::Succeeded,
            attempts: 1,
            max_attempts: 3,
            payload,
            result: Some(json!({"secret": "result"})),
            error_code: None,
            error_message: None,
            request_id: None,
            idempotency_key: Some("job-1".to_owned()),
            created_at_ms: 0,
            updated_at_ms: 0,
            run_at_ms: 0,
            started_at_ms: None,
            finished_at_ms: None,
            lease_owner: None,
            lease_expires_at_ms: None,
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

    fn envelope(id: &str, kind: &str, payload: Value) -> Envelope {
        Envelope {
            v: ENVELOPE_VERSION,
            id: id.to_owned(),
            kind: kind.to_owned(),
            payload,
            idempotency_key: None,
            deadline: None,
            priority: None,
            run_at: None,
            timeout_ms: None,
        }
    }

    /// Proves a message naming an existing job is that job only with the same kind and payload;
    /// another kind or payload is a conflict whose reason names neither the job's payload nor
    /// its result.
    #[test]
    fn a_message_naming_another_job_is_a_conflict() {
        let stored = job("sentiment.analyze", json!({"texts": ["mine"], "n": 1.0}));
        let same = envelope(
            "job-1",
            "sentiment.analyze",
            json!({"n": 1, "texts": ["mine"]}),
        );
        assert_eq!(conflict_of(&stored, &same), None);

        let other_payload = envelope("job-1", "sentiment.analyze", json!({"texts": ["yours"]}));
        let reason = conflict_of(&stored, &other_payload).expect("conflict");
        assert!(reason.starts_with("conflict:"), "{reason}");
        assert!(
            reason.contains("id") && reason.contains("payload"),
            "{reason}"
        );
        assert!(
            !reason.contains("mine") && !reason.contains("secret"),
            "{reason}"
        );

        let other_kind = Envelope {
            idempotency_key: Some("job-1".to_owned()),
            ..envelope(
                "msg-9",
                "provider.complete",
                json!({"texts": ["mine"], "n": 1}),
            )
        };
        let reason = conflict_of(&stored, &other_kind).expect("conflict");
        assert!(
            reason.contains("idempotency key") && reason.contains("kind"),
            "{reason}"
        );
    }

    /// Proves JSON documents compare by value: key order and number spelling do not matter,
    /// values and shapes do.
    #[test]
    fn json_documents_compare_by_value() {
        assert!(same_json(
            &json!({"a": [1, 2.5], "b": null}),
            &json!({"b": null, "a": [1.0, 2.5]})
        ));
        assert!(!same_json(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(!same_json(&json!([1, 2]), &json!([2, 1])));
        assert!(!same_json(&json!({"a": 1}), &json!({"a": "1"})));
        assert!(!same_json(&json!(0.1), &json!(0.2)));
        assert!(same_json(&json!(0.1 + 0.2), &json!(0.3)));
    }
}
