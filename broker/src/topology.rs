//! Names and idempotent declaration of Bulwark's exchanges and queues.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use crate::BrokerError;

/// The names of everything Bulwark declares under one namespace:
///
/// - `<ns>.jobs` (direct, routing key = job kind) → quorum queue `<ns>.<kind>`, with
///   `x-delivery-limit` and `x-dead-letter-exchange = <ns>.dlx`;
/// - `<ns>.dlx` (direct, routing key = kind) → quorum queue `<ns>.dlq.<kind>`;
/// - `<ns>.events` (topic): `job.succeeded.<kind>`, `job.failed.<kind>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub namespace: String,
    pub delivery_limit: u32,
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

    pub fn job_queue(&self, kind: &str) -> String {
        format!("{}.{kind}", self.namespace)
    }

    pub fn dead_letter_queue(&self, kind: &str) -> String {
        format!("{}.dlq.{kind}", self.namespace)
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

    /// Declares a server-named, exclusive queue bound to the events exchange with `pattern`
    /// (`job.#`, `job.failed.<kind>`, …) and returns its name: how a producer listens for the
    /// outcomes of its jobs. The queue goes away with the channel's connection.
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
        let name = declare_reply_queue(channel).await?;
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
        let dead_letter_queue = self.dead_letter_queue(kind);
        channel
            .queue_declare(dead_letter_queue.as_str().into(), durable, dlq_arguments)
            .await
            .map_err(|error| BrokerError::topology(&dead_letter_queue, &error))?;
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
            AMQPValue::LongString(dlx.as_str().into()),
        );
        arguments.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(kind.into()),
        );
        let queue = self.job_queue(kind);
        channel
            .queue_declare(queue.as_str().into(), durable, arguments)
            .await
            .map_err(|error| BrokerError::topology(&queue, &error))?;
        let jobs_exchange = self.jobs_exchange();
        channel
            .queue_bind(
                queue.as_str().into(),
                jobs_exchange.as_str().into(),
                kind.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|error| BrokerError::topology(&queue, &error))?;
        Ok(())
    }
}

/// Declares a server-named queue that only this channel's connection reads and that goes away
/// with it; returns its name. Where a producer receives replies (`reply_to`) or outcome events.
pub async fn declare_reply_queue(channel: &Channel) -> Result<String, BrokerError> {
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|error| BrokerError::topology("reply queue", &error))?;
    Ok(queue.name().as_str().to_owned())
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
    }
}
