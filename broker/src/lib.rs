//! Bulwark's RabbitMQ transport (lapin): the topology, the versioned envelope, a publisher with
//! confirms, and the ingress consumer actors that turn deliveries into jobs.
//!
//! A job travels like this: [`bulwark_actors::JobIntake`] stores the row (in the outbox), the
//! [`BrokerPublisher`] publishes it persistent and mandatory and waits for the confirm, a
//! [`ConsumerActor`] of the kind's queue receives it, creates or finds the row (idempotent),
//! runs it under a lease, stores the outcome, publishes the outcome event (and the reply), and
//! only then acks. A crash anywhere before the ack brings the message back.
//!
//! # Layout
//! - `topology`: [`Topology`], names and idempotent declaration of exchanges and queues, with
//!   their [`QueueLimits`].
//! - `envelope`: [`Envelope`], v1, as JSON or bincode, decoded within a byte limit.
//! - `trust`: [`ProducerLimits`], what a node takes from producers (body size, `reply_to`).
//! - `connection`: [`BrokerSettings`], connecting with a timeout, [`BrokerHealth`].
//! - `publisher`: [`BrokerPublisher`], publishes with confirms over one lazily reconnected link.
//! - `delivery`: what one delivery goes through, from decode to ack.
//! - `consumer`: [`ConsumerActor`], one per job-kind queue and one per dead-letter queue; fails
//!   on connection loss.
//! - `dead_letters`: storing what lands in `<ns>.dlq.<kind>`, and publishing requeued letters.
//! - `republisher`: [`RepublisherActor`], drains the outbox of jobs never confirmed.
//! - `writes`: [`DeliveryWrites`], the delivery path's statements, group-committed.
//! - `ingress`: the `ingress` subsystem (a `bulwark_supervisors::SubsystemSpec`) over the
//!   consumers and the republisher, with its own reconnect-backoff restart limits.
//! - `metrics`: metric names and the events that emit them.

use std::time::Duration;

mod connection;
mod consumer;
mod dead_letters;
mod delivery;
mod envelope;
mod ingress;
pub mod metrics;
mod publisher;
mod republisher;
mod topology;
mod trust;
mod writes;

pub use connection::{BrokerHealth, BrokerSettings, SharedConnection, connect};
pub use consumer::{
    ConsumerActor, ConsumerMsg, ConsumerParams, ConsumerRole, ConsumerState, drain_consumers,
};
pub use dead_letters::{DEAD_LETTER_ID_HEADER, DeadLetterSink};
pub use delivery::{DeliveryContext, JobEvent, REJECT_REASON_HEADER, REPLY_REFUSED_HEADER};
pub use envelope::{
    CONTENT_TYPE_BINCODE, CONTENT_TYPE_JSON, ENVELOPE_VERSION, Envelope, EnvelopeError,
    MAX_ENVELOPE_BYTES,
};
pub use ingress::{IngressParams, ingress_supervisor};
pub use publisher::{BrokerPublisher, MessageTrace, OutgoingMessage};
pub use republisher::{RepublisherActor, RepublisherMsg, RepublisherParams};
pub use topology::{Overflow, PriorityBand, QueueLimits, Topology};
pub use trust::{DIRECT_REPLY_TO, ProducerLimits};
pub use writes::DeliveryWrites;

/// Why a broker operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    #[error("failed to connect to the broker: {0}")]
    Connect(#[source] Box<lapin::Error>),
    #[error("failed to connect to the broker: no answer within {0:?}")]
    ConnectTimeout(Duration),
    /// The URL does not parse (the config's validation lets none through).
    #[error("the broker url is not an AMQP URI: {0}")]
    InvalidUrl(String),
    /// `hint` says what to do about a known cause (empty otherwise).
    #[error("failed to declare {name}: {source}{hint}")]
    Topology {
        name: String,
        #[source]
        source: Box<lapin::Error>,
        hint: &'static str,
    },
    #[error("broker channel failed: {0}")]
    Channel(#[source] Box<lapin::Error>),
    #[error("broker channel failed: no channel within {0:?}")]
    ChannelTimeout(Duration),
    #[error("failed to encode the message: {0}")]
    Encode(#[source] EnvelopeError),
    /// `source` is the channel's error when the publish failed on it.
    #[error("publish to {exchange} with key {routing_key} was not confirmed: {reason}")]
    Unconfirmed {
        exchange: String,
        routing_key: String,
        reason: String,
        #[source]
        source: Option<Box<lapin::Error>>,
    },
}

impl BrokerError {
    pub(crate) fn topology(name: &str, error: &lapin::Error) -> BrokerError {
        BrokerError::Topology {
            name: name.to_owned(),
            source: Box::new(error.clone()),
            hint: "",
        }
    }

    /// Returns true when trying again (after reconnecting) may succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            BrokerError::Topology { .. } | BrokerError::InvalidUrl(_)
        )
    }
}
