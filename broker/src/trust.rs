//! What a node takes from producers it does not trust: how large a body it reads, and which
//! queues a message's `reply_to` may make it publish into.

use bulwark_core::JobKind;

use crate::Topology;

/// RabbitMQ's direct reply-to pseudo-queue; a consumer of it receives replies as
/// `amq.rabbitmq.reply-to.<token>`, which only reaches the channel that sent the request.
pub const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// The limits applied to every delivery, from `[amqp]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerLimits {
    /// Largest body a consumer reads; a larger one is dead-lettered (or stored) unread.
    pub max_message_bytes: usize,
    /// A `reply_to` outside direct reply-to must start with one of these.
    pub reply_to_prefixes: Vec<String>,
}

impl ProducerLimits {
    /// Returns why a body of `num_bytes` is not read, if it is too large.
    pub fn oversized(&self, num_bytes: usize) -> Option<String> {
        (num_bytes > self.max_message_bytes).then(|| {
            format!(
                "body: {num_bytes} bytes, more than amqp.max_message_bytes ({})",
                self.max_message_bytes
            )
        })
    }

    /// Returns `Ok` when Bulwark may publish a job's outcome to `reply_to` (through the default
    /// exchange, where the routing key names a queue), else why not. Allowed: RabbitMQ direct
    /// reply-to, or a name under an allow-listed prefix that is none of this namespace's job
    /// and dead-letter queues.
    pub fn check_reply_to(&self, topology: &Topology, reply_to: &str) -> Result<(), String> {
        if reply_to == DIRECT_REPLY_TO
            || reply_to
                .strip_prefix(DIRECT_REPLY_TO)
                .is_some_and(|rest| rest.len() > 1 && rest.starts_with('.'))
        {
            return Ok(());
        }
        if !self
            .reply_to_prefixes
            .iter()
            .any(|prefix| reply_to.starts_with(prefix.as_str()))
        {
            return Err(format!(
                "reply_to: `{}` is neither direct reply-to nor under amqp.reply_to_prefixes",
                printable(reply_to)
            ));
        }
        let is_own_queue = JobKind::ALL.iter().any(|kind| {
            topology.is_job_queue_of(reply_to, kind.as_str())
                || reply_to == topology.dead_letter_queue(kind.as_str())
        });
        if is_own_queue {
            return Err(format!(
                "reply_to: `{}` is one of Bulwark's own queues",
                printable(reply_to)
            ));
        }
        Ok(())
    }
}

/// Returns a producer's text bounded and without control characters, fit for a log line or a
/// header.
fn printable(text: &str) -> String {
    text.chars()
        .take(255)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::QueueLimits;

    use super::*;

    fn limits() -> (ProducerLimits, Topology) {
        let topology = Topology {
            namespace: "bulwark".to_owned(),
            delivery_limit: 5,
            queue_limits: QueueLimits::default(),
        };
        let limits = ProducerLimits {
            max_message_bytes: 1024,
            reply_to_prefixes: vec![topology.reply_queue_prefix(), "shop.".to_owned()],
        };
        (limits, topology)
    }

    /// Proves only direct reply-to and allow-listed names are replied to, and that an
    /// allow-listed prefix still cannot name one of Bulwark's own queues.
    #[test]
    fn reply_to_is_allowed_only_to_direct_reply_to_and_listed_prefixes() {
        let (limits, topology) = limits();
        let allowed = [
            "amq.rabbitmq.reply-to",
            "amq.rabbitmq.reply-to.g1h2AA==.abc",
            "bulwark.reply.0192abc",
            "shop.replies",
        ];
        for reply_to in allowed {
            assert_eq!(
                limits.check_reply_to(&topology, reply_to),
                Ok(()),
                "{reply_to}"
            );
        }
        let refused = [
            "",
            "bulwark.sentiment.analyze",
            "bulwark.dlq.sentiment.analyze",
            "victim-queue",
            "amq.gen-abc",
            "amq.rabbitmq.reply-to.",
            "amq.rabbitmq.reply-tox",
            "bulwark.reply",
        ];
        for reply_to in refused {
            let reason = limits.check_reply_to(&topology, reply_to).unwrap_err();
            assert!(reason.starts_with("reply_to:"), "{reply_to}: {reason}");
        }
        let own = ProducerLimits {
            reply_to_prefixes: vec!["bulwark.sentiment".to_owned()],
            ..limits
        };
        let reason = own
            .check_reply_to(&topology, "bulwark.sentiment.analyze")
            .unwrap_err();
        assert!(reason.contains("own queues"), "{reason}");
    }

    /// Proves the size limit is inclusive and names the configured key.
    #[test]
    fn bodies_over_the_limit_are_named_oversized() {
        let (limits, _) = limits();
        assert_eq!(limits.oversized(1024), None);
        let reason = limits.oversized(1025).expect("oversized");
        assert!(reason.contains("amqp.max_message_bytes (1024)"), "{reason}");
    }
}
