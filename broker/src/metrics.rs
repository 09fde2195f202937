//! Metric names of the broker crate and the events that emit them. Labels are bounded: kinds
//! come from the fixed set of job kinds, causes from [`RefusalCause`].

use bulwark_core::{MetricSpec, MetricUnit};
use tracing::{info, warn};

pub const MESSAGES_REFUSED_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_broker_messages_refused_total",
    "Delivered messages dead-lettered instead of run, by kind and cause",
)
.with_labels(&["kind", "cause"]);
pub const REPLIES_REFUSED_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_broker_replies_refused_total",
    "Job outcomes not sent to a reply_to that is not allowed",
)
.with_labels(&["kind"]);
pub const GATE_PARKED_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_broker_gate_parked_total",
    "Deliveries of a limited kind parked in the outbox after waiting out the kind's gate",
)
.with_labels(&["kind"]);
pub const DEAD_LETTER_BODIES_OMITTED_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_broker_dead_letter_bodies_omitted_total",
    "Dead letters stored without their body, larger than amqp.max_message_bytes",
)
.with_labels(&["kind"]);

/// Why a delivered message was dead-lettered instead of run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalCause {
    /// Its body is larger than `amqp.max_message_bytes`; it was not read.
    TooLarge,
    /// Malformed, unknown version, wrong kind, invalid payload or deadline passed.
    Invalid,
    /// Its id or idempotency key names a job of another kind or payload (HTTP's 409).
    Conflict,
    /// Bulwark could not handle it (its job row vanished, its event could not be encoded).
    Internal,
}

impl RefusalCause {
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalCause::TooLarge => "too_large",
            RefusalCause::Invalid => "invalid",
            RefusalCause::Conflict => "conflict",
            RefusalCause::Internal => "internal",
        }
    }
}

/// A delivery is dead-lettered with a reason.
#[derive(Debug)]
pub struct MessageRefused<'a> {
    pub kind: &'a str,
    pub cause: RefusalCause,
    pub reason: &'a str,
}

impl MessageRefused<'_> {
    pub fn emit(&self) {
        let cause = self.cause.as_str();
        warn!(
            kind = self.kind,
            cause,
            reason = self.reason,
            "dead-lettering message"
        );
        metrics::counter!(MESSAGES_REFUSED_TOTAL.name, "kind" => self.kind.to_owned(), "cause" => cause)
            .increment(1);
    }
}

/// A delivery of a limited kind waited its longest for the kind's gate: its job was parked
/// in the outbox, to be published again.
#[derive(Debug)]
pub struct GateWaitedOut<'a> {
    pub kind: &'a str,
}

impl GateWaitedOut<'_> {
    pub fn emit(&self) {
        info!(
            kind = self.kind,
            "kind's gate stayed full, job parked in the outbox"
        );
        metrics::counter!(GATE_PARKED_TOTAL.name, "kind" => self.kind.to_owned()).increment(1);
    }
}

/// A job ran but its outcome is not sent to the message's `reply_to`.
#[derive(Debug)]
pub struct ReplyToRefused<'a> {
    pub kind: &'a str,
    pub reason: &'a str,
}

impl ReplyToRefused<'_> {
    pub fn emit(&self) {
        warn!(
            kind = self.kind,
            reason = self.reason,
            "reply_to not allowed, no reply will be sent"
        );
        metrics::counter!(REPLIES_REFUSED_TOTAL.name, "kind" => self.kind.to_owned()).increment(1);
    }
}

/// A message in a dead-letter queue was too large to store: its letter keeps its properties
/// and reason, not its body.
#[derive(Debug)]
pub struct DeadLetterBodyOmitted<'a> {
    pub kind: &'a str,
    pub num_bytes: usize,
}

impl DeadLetterBodyOmitted<'_> {
    pub fn emit(&self) {
        warn!(
            kind = self.kind,
            num_bytes = self.num_bytes,
            "dead letter stored without its body, larger than amqp.max_message_bytes"
        );
        metrics::counter!(DEAD_LETTER_BODIES_OMITTED_TOTAL.name, "kind" => self.kind.to_owned())
            .increment(1);
    }
}

pub const CONNECTIONS_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_broker_connections_total",
    "Connections to RabbitMQ this node opened or failed to open, by role (publisher, consumers); more than one opened per role means reconnects",
)
.with_labels(&["role", "outcome"]);
pub const PUBLISHES_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_broker_publishes_total",
    "Messages published to RabbitMQ, by outcome (confirmed, returned, nacked, failed)",
)
.with_labels(&["outcome"]);
pub const LINK_UP: MetricSpec = MetricSpec::gauge(
    "bulwark_broker_link_up",
    MetricUnit::None,
    "1 while a broker link of this node (the publisher, a consumer per kind and band) is up, else 0",
)
.with_labels(&["link"]);
pub const OUTBOX_JOBS: MetricSpec = MetricSpec::gauge(
    "bulwark_outbox_jobs",
    MetricUnit::Count,
    "Due jobs stored for RabbitMQ whose publish is not confirmed yet, paused kinds left out, cluster-wide (the republisher's backlog)",
);

/// A connection to the broker was opened, or failed to open.
#[derive(Debug)]
pub struct BrokerConnected<'a> {
    pub role: &'a str,
    pub is_opened: bool,
}

impl BrokerConnected<'_> {
    pub fn emit(&self) {
        let outcome = if self.is_opened { "opened" } else { "failed" };
        metrics::counter!(CONNECTIONS_TOTAL.name, "role" => self.role.to_owned(), "outcome" => outcome)
            .increment(1);
    }
}

/// Messages were published; how many ended each way.
#[derive(Debug, Default)]
pub struct MessagesPublished {
    pub num_confirmed: u64,
    pub num_returned: u64,
    pub num_nacked: u64,
    pub num_failed: u64,
}

impl MessagesPublished {
    /// None of `num_messages` reached the broker (no channel, no confirm in time).
    pub fn failed(num_messages: usize) -> MessagesPublished {
        MessagesPublished {
            num_failed: num_messages as u64,
            ..MessagesPublished::default()
        }
    }

    pub fn emit(&self) {
        for (outcome, count) in [
            ("confirmed", self.num_confirmed),
            ("returned", self.num_returned),
            ("nacked", self.num_nacked),
            ("failed", self.num_failed),
        ] {
            if count > 0 {
                metrics::counter!(PUBLISHES_TOTAL.name, "outcome" => outcome).increment(count);
            }
        }
    }
}

/// A broker link went up or down.
#[derive(Debug)]
pub struct LinkChanged<'a> {
    pub link: &'a str,
    pub is_up: bool,
}

impl LinkChanged<'_> {
    pub fn emit(&self) {
        metrics::gauge!(LINK_UP.name, "link" => self.link.to_owned()).set(if self.is_up {
            1.0
        } else {
            0.0
        });
    }
}

/// The republisher read the outbox's depth.
#[derive(Debug)]
pub struct OutboxDepthRead {
    pub num_jobs: i64,
}

impl OutboxDepthRead {
    pub fn emit(&self) {
        metrics::gauge!(OUTBOX_JOBS.name).set(self.num_jobs as f64);
    }
}

/// Every metric this crate emits, for the recorder's descriptions and `docs/metrics.md`.
pub const METRICS: &[MetricSpec] = &[
    MESSAGES_REFUSED_TOTAL,
    REPLIES_REFUSED_TOTAL,
    GATE_PARKED_TOTAL,
    DEAD_LETTER_BODIES_OMITTED_TOTAL,
    CONNECTIONS_TOTAL,
    PUBLISHES_TOTAL,
    LINK_UP,
    OUTBOX_JOBS,
];
