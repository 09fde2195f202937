//! Metric names of the broker crate and the events that emit them. Labels are bounded: kinds
//! come from the fixed set of job kinds, causes from [`RefusalCause`].

use tracing::{info, warn};

pub const MESSAGES_REFUSED_TOTAL: &str = "bulwark_broker_messages_refused_total";
pub const REPLIES_REFUSED_TOTAL: &str = "bulwark_broker_replies_refused_total";
pub const GATE_PARKED_TOTAL: &str = "bulwark_broker_gate_parked_total";
pub const DEAD_LETTER_BODIES_OMITTED_TOTAL: &str =
    "bulwark_broker_dead_letter_bodies_omitted_total";

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
        metrics::counter!(MESSAGES_REFUSED_TOTAL, "kind" => self.kind.to_owned(), "cause" => cause)
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
        metrics::counter!(GATE_PARKED_TOTAL, "kind" => self.kind.to_owned()).increment(1);
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
        metrics::counter!(REPLIES_REFUSED_TOTAL, "kind" => self.kind.to_owned()).increment(1);
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
        metrics::counter!(DEAD_LETTER_BODIES_OMITTED_TOTAL, "kind" => self.kind.to_owned())
            .increment(1);
    }
}
