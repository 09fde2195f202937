//! Names and idempotent declaration of Bulwark's exchanges and queues.

use bulwark_core::JobKind;
use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use crate::BrokerError;

/// The names of everything Bulwark declares under one namespace:
///
/// - `<ns>.jobs` (direct) → the quorum queues of a kind, one per [`PriorityBand`]:
///   `<ns>.<kind>.high` (routing key `<kind>.high`, priorities 7–9), `<ns>.<kind>` (routing
///   key `<kind>`, 4–6) and `<ns>.<kind>.low` (`<kind>.low`, 0–3), each with
///   `x-delivery-limit`, `x-dead-letter-exchange = <ns>.dlx` and dead-letter routing key
///   `<kind>`;
/// - `<ns>.dlx` (direct, routing key = kind) → quorum queue `<ns>.dlq.<kind>`;
/// - `<ns>.events` (topic): `job.succeeded.<kind>`, `job.failed.<kind>`;
/// - `<ns>.reply.<id>`: where Bulwark's own producers (tests, bench) take replies.
///
/// Every queue of a kind carries the [`QueueLimits`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub namespace: String,
    pub delivery_limit: u32,
    pub queue_limits: QueueLimits,
}

/// A range of job priorities with a queue of its own per kind. RabbitMQ's quorum queues have
/// no message priorities, so each band is its own queue with its own consumer on every node:
/// a band's jobs never wait behind another band's backlog, and the bands are consumed side
/// by side, each with the consumer prefetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PriorityBand {
    /// Priorities 7 to 9.
    High,
    /// Priorities 4 to 6 (the default, 5); the kind's queue as it always was.
    Normal,
    /// Priorities 0 to 3.
    Low,
}

impl PriorityBand {
    pub const ALL: [PriorityBand; 3] =
        [PriorityBand::High, PriorityBand::Normal, PriorityBand::Low];

    /// Returns the band of a job priority (0 to 9; above 9 is high).
    pub fn of(priority: u8) -> PriorityBand {
        match priority {
            7.. => PriorityBand::High,
            4..=6 => PriorityBand::Normal,
            _ => PriorityBand::Low,
        }
    }

    /// What the band adds to a kind's queue name and routing key.
    pub fn suffix(self) -> &'static str {
        match self {
            PriorityBand::High => ".high",
            PriorityBand::Normal => "",
            PriorityBand::Low => ".low",
        }
    }
}

/// How much a job or dead-letter queue holds (`x-max-length-bytes`) and what it does when full
/// (`x-overflow`). Arguments of an existing queue cannot change: declaring it with others fails
/// with PRECONDITION_FAILED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueLimits {
    /// `None`: no `x-max-length-bytes` argument (nor `x-overflow`) is declared.
    pub max_length_bytes: Option<u64>,
    pub overflow: Overflow,
}

/// `x-overflow` of a full queue; quorum queues support these two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Publishes are nacked: a producer with confirms (Bulwark's outbox included) retries.
    #[default]
    RejectPublish,
    /// The oldest message is dropped, dead-lettered to `<ns>.dlx` from a job queue.
    DropHead,
}

impl Overflow {
    pub fn as_str(self) -> &'static str {
        match self {
            Overflow::RejectPublish => "reject-publish",
            Overflow::DropHead => "drop-head",
        }
    }
}

impl QueueLimits {
    /// Adds the limit's arguments to a queue declaration's.
    fn add_to(self, arguments: &mut FieldTable) {
        let Some(max_length_bytes) = self.max_length_bytes else {
            return;
        };
        arguments.insert(
            "x-max-length-bytes".into(),
            AMQPValue::LongLongInt(i64::try_from(max_length_bytes).unwrap_or(i64::MAX)),
        );
        arguments.insert(
            "x-overflow".into(),
            AMQPValue::LongString(self.overflow.as_str().into()),
        );
    }
}

impl Topology {
    pub fn jobs_exchange(&self) -> String {
        format!("{}.jobs", self.namespace)
    }

    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.namespace)
    }

    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.namespace)
    }

    /// Returns the queue of `kind`'s normal band, where a message routed by its kind alone
    /// goes.
    pub fn job_queue(&self, kind: &str) -> String {
        self.job_queue_in(kind, PriorityBand::Normal)
    }

    /// Returns the queue of `kind`'s jobs in `band`.
    pub fn job_queue_in(&self, kind: &str, band: PriorityBand) -> String {
        format!("{}.{kind}{}", self.namespace, band.suffix())
    }

    /// Returns the routing key on the jobs exchange of `kind`'s jobs in `band`.
    pub fn job_routing_key(kind: &str, band: PriorityBand) -> String {
        format!("{kind}{}", band.suffix())
    }

    /// Returns true when `queue` is one of `kind`'s job queues.
    pub fn is_job_queue_of(&self, queue: &str, kind: &str) -> bool {
        PriorityBand::ALL
            .iter()
            .any(|band| queue == self.job_queue_in(kind, *band))
    }

    pub fn dead_letter_queue(&self, kind: &str) -> String {
        format!("{}.dlq.{kind}", self.namespace)
    }

    /// Returns every queue [`Topology::declare`] declares for `kind`: its job queue in each
    /// priority band, then its dead-letter queue.
    pub fn queues_of(&self, kind: &str) -> Vec<String> {
        PriorityBand::ALL
            .iter()
            .map(|band| self.job_queue_in(kind, *band))
            .chain([self.dead_letter_queue(kind)])
            .collect()
    }

    /// Returns the prefix of the reply queues [`Topology::declare_reply_queue`] declares, the
    /// default allow-listed `reply_to` prefix.
    pub fn reply_queue_prefix(&self) -> String {
        format!("{}.reply.", self.namespace)
    }

    /// Declares an exclusive queue `<ns>.reply.<uuid>` that goes away with the channel's
    /// connection and returns its name: where a producer receives replies (`reply_to`) or
    /// outcome events. Its name is under the default `amqp.reply_to_prefixes`.
    pub async fn declare_reply_queue(&self, channel: &Channel) -> Result<String, BrokerError> {
        let name = format!(
            "{}{}",
            self.reply_queue_prefix(),
            uuid::Uuid::now_v7().simple()
        );
        channel
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|error| BrokerError::topology(&name, &error))?;
        Ok(name)
    }

    /// Returns the routing key of a job's outcome event on the events exchange.
    pub fn event_routing_key(succeeded: bool, kind: &str) -> String {
        let outcome = if succeeded { "succeeded" } else { "failed" };
        format!("job.{outcome}.{kind}")
    }

    /// Declares the three exchanges and the queues of `kinds`. Safe to repeat: declarations
    /// with the same arguments are no-ops on the broker.
    pub async fn declare(&self, channel: &Channel, kinds: &[&str]) -> Result<(), BrokerError> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        let exchanges = [
            (self.jobs_exchange(), ExchangeKind::Direct),
            (self.dead_letter_exchange(), ExchangeKind::Direct),
            (self.events_exchange(), ExchangeKind::Topic),
        ];
        for (name, kind) in exchanges {
            channel
                .exchange_declare(name.as_str().into(), kind, durable, FieldTable::default())
                .await
                .map_err(|error| BrokerError::topology(&name, &error))?;
        }
        for kind in kinds {
            self.declare_kind(channel, kind).await?;
        }
        Ok(())
    }

    /// Deletes the namespace: every job kind's queues, with their messages, then the three
    /// exchanges. How a benchmark or a test removes its namespace (a quorum queue left behind
    /// keeps its processes and file descriptors in the broker).
    pub async fn delete(&self, channel: &Channel) -> Result<(), BrokerError> {
        let queues = JobKind::ALL
            .iter()
            .flat_map(|kind| self.queues_of(kind.as_str()));
        for queue in queues {
            channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await
                .map_err(|error| BrokerError::topology(&queue, &error))?;
        }
        let exchanges = [
            self.jobs_exchange(),
            self.dead_letter_exchange(),
            self.events_exchange(),
        ];
        for exchange in exchanges {
            channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await
                .map_err(|error| BrokerError::topology(&exchange, &error))?;
        }
        Ok(())
    }

    /// Declares a reply queue (see [`Topology::declare_reply_queue`]) bound to the events
    /// exchange with `pattern` (`job.#`, `job.failed.<kind>`, …) and returns its name: how a
    /// producer listens for the outcomes of its jobs. The queue goes away with the channel's
    /// connection.
    pub async fn declare_event_listener(
        &self,
        channel: &Channel,
        pattern: &str,
    ) -> Result<String, BrokerError> {
        let events_exchange = self.events_exchange();
        channel
            .exchange_declare(
                events_exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|error| BrokerError::topology(&events_exchange, &error))?;
        let name = self.declare_reply_queue(channel).await?;
        channel
            .queue_bind(
                name.as_str().into(),
                events_exchange.as_str().into(),
                pattern.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|error| BrokerError::topology(&name, &error))?;
        Ok(name)
    }

    async fn declare_kind(&self, channel: &Channel, kind: &str) -> Result<(), BrokerError> {
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let mut dlq_arguments = FieldTable::default();
        dlq_arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        self.queue_limits.add_to(&mut dlq_arguments);
        let dead_letter_queue = self.dead_letter_queue(kind);
        channel
            .queue_declare(dead_letter_queue.as_str().into(), durable, dlq_arguments)
            .await
            .map_err(|error| queue_declare_error(&dead_letter_queue, &error))?;
        let dlx = self.dead_letter_exchange();
        channel
            .queue_bind(
                dead_letter_queue.as_str().into(),
                dlx.as_str().into(),
                kind.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|error| BrokerError::topology(&dead_letter_queue, &error))?;

        for band in PriorityBand::ALL {
            self.declare_job_queue(channel, kind, band).await?;
        }
        Ok(())
    }

    /// Declares `kind`'s job queue of `band`, bound to the jobs exchange with its routing key;
    /// what it dead-letters goes to the kind's dead-letter queue, whatever the band.
    async fn declare_job_queue(
        &self,
        channel: &Channel,
        kind: &str,
        band: PriorityBand,
    ) -> Result<(), BrokerError> {
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        arguments.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(self.delivery_limit)),
        );
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(self.dead_letter_exchange().as_str().into()),
        );
        arguments.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(kind.into()),
        );
        self.queue_limits.add_to(&mut arguments);
        let queue = self.job_queue_in(kind, band);
        channel
            .queue_declare(queue.as_str().into(), durable, arguments)
            .await
            .map_err(|error| queue_declare_error(&queue, &error))?;
        let jobs_exchange = self.jobs_exchange();
        channel
            .queue_bind(
                queue.as_str().into(),
                jobs_exchange.as_str().into(),
                Topology::job_routing_key(kind, band).as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|error| BrokerError::topology(&queue, &error))?;
        Ok(())
    }
}

/// Returns the error of a failed queue declaration; a queue that exists with other arguments
/// (PRECONDITION_FAILED, most often limits changed in the config) says what to do.
fn queue_declare_error(queue: &str, error: &lapin::Error) -> BrokerError {
    let message = error.to_string();
    let precondition_failed =
        message.contains("PRECONDITION_FAILED") || message.contains("PRECONDITION-FAILED");
    BrokerError::Topology {
        name: queue.to_owned(),
        source: Box::new(error.clone()),
        hint: if precondition_failed {
            " (the queue exists with other arguments: keep amqp.queue_max_length_bytes and \
             amqp.queue_overflow as they were, or see README \"Running on RabbitMQ\" for \
             moving existing queues to new limits)"
        } else {
            ""
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the names follow the team's fixed scheme.
    #[test]
    fn names_follow_the_scheme() {
        let topology = Topology {
            namespace: "bulwark".to_owned(),
            delivery_limit: 5,
            queue_limits: QueueLimits::default(),
        };
        assert_eq!(topology.jobs_exchange(), "bulwark.jobs");
        assert_eq!(topology.dead_letter_exchange(), "bulwark.dlx");
        assert_eq!(topology.events_exchange(), "bulwark.events");
        assert_eq!(
            topology.job_queue("sentiment.analyze"),
            "bulwark.sentiment.analyze"
        );
        assert_eq!(
            topology.dead_letter_queue("sentiment.analyze"),
            "bulwark.dlq.sentiment.analyze"
        );
        assert_eq!(
            Topology::event_routing_key(false, "sentiment.analyze"),
            "job.failed.sentiment.analyze"
        );
        assert_eq!(topology.reply_queue_prefix(), "bulwark.reply.");
        assert_eq!(
            topology.job_queue_in("audit.run", PriorityBand::High),
            "bulwark.audit.run.high"
        );
        assert_eq!(
            topology.job_queue_in("audit.run", PriorityBand::Low),
            "bulwark.audit.run.low"
        );
        assert_eq!(
            Topology::job_routing_key("audit.run", PriorityBand::High),
            "audit.run.high"
        );
        assert!(topology.is_job_queue_of("bulwark.audit.run.low", "audit.run"));
        assert!(!topology.is_job_queue_of("bulwark.audit.run.lower", "audit.run"));
    }

    /// Proves priorities 0–3, 4–6 and 7–9 fall in the low, normal and high bands.
    #[test]
    fn priorities_fall_in_three_bands() {
        let bands: Vec<PriorityBand> = (0..=9).map(PriorityBand::of).collect();
        use PriorityBand::{High, Low, Normal};
        assert_eq!(
            bands,
            [Low, Low, Low, Low, Normal, Normal, Normal, High, High, High]
        );
    }

    /// Proves queue limits become `x-max-length-bytes` and `x-overflow`, and that no limit
    /// declares neither (as queues declared before limits existed were).
    #[test]
    fn queue_limits_become_arguments_only_when_set() {
        let mut arguments = FieldTable::default();
        QueueLimits {
            max_length_bytes: Some(1024),
            overflow: Overflow::DropHead,
        }
        .add_to(&mut arguments);
        assert_eq!(
            arguments.inner().get("x-max-length-bytes"),
            Some(&AMQPValue::LongLongInt(1024))
        );
        assert_eq!(
            arguments.inner().get("x-overflow"),
            Some(&AMQPValue::LongString("drop-head".into()))
        );
        let mut unlimited = FieldTable::default();
        QueueLimits::default().add_to(&mut unlimited);
        assert!(unlimited.inner().is_empty());
    }
}
