use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::SecretUrl;

/// RabbitMQ (`[amqp]`). Without `url`, the embedded database-backed queue carries jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpConfig {
    /// `amqp://user:password@host:5672/%2f`; set by `AMQP_URL`.
    pub url: Option<SecretUrl>,
    /// Prefix of every exchange and queue name (`<namespace>.jobs`, `<namespace>.<kind>`).
    pub namespace: String,
    /// Unacked deliveries per consumer: the consumer actor's mailbox bound.
    pub prefetch: u16,
    /// `x-delivery-limit` of the job queues: deliveries before RabbitMQ dead-letters a message.
    pub delivery_limit: u32,
    /// How long connecting (TCP, TLS and AMQP handshake) may take.
    pub connect_timeout_ms: u64,
    /// How long a publish may wait for the broker's confirm.
    pub confirm_timeout_ms: u64,
    /// AMQP heartbeat proposed to the broker, in seconds, unless the URL sets `heartbeat=`: a
    /// connection that stalls (a dead peer, a wedged network path) is closed and reopened
    /// after about two of them, instead of after RabbitMQ's default 60 s ones. 0 disables
    /// heartbeats (not advised).
    pub heartbeat_secs: u16,
    /// First delay before a consumer reconnects; doubles up to `reconnect_backoff_max_ms`.
    pub reconnect_backoff_ms: u64,
    pub reconnect_backoff_max_ms: u64,
    /// Restarts of the `ingress` supervisor's children (consumers reconnecting) allowed within
    /// `restarts_within_ms` before it escalates. Sized for broker outages: with backoff capped
    /// at `reconnect_backoff_max_ms`, consumers retrying for minutes never exhaust it, so an
    /// outage leaves the rest of the node serving.
    pub max_restarts: u32,
    pub restarts_within_ms: u64,
    /// How often the republisher looks for stored jobs whose publish was never confirmed.
    pub republish_interval_ms: u64,
    /// Largest message body a consumer (job or dead-letter queue) accepts; a larger one is
    /// dead-lettered unread. At most [`MAX_MESSAGE_BYTES_CEILING`].
    pub max_message_bytes: usize,
    /// `x-max-length-bytes` of the job and dead-letter queues; 0 declares no limit (for queues
    /// that existed before limits, or that an operator policy limits).
    pub queue_max_length_bytes: u64,
    /// `x-overflow` of the job and dead-letter queues when `queue_max_length_bytes` is reached.
    pub queue_overflow: QueueOverflow,
    /// Queues a message's `reply_to` may name besides RabbitMQ direct reply-to
    /// (`amq.rabbitmq.reply-to…`): a reply goes out only when `reply_to` starts with one of
    /// these. `{namespace}` stands for `namespace`. Empty: direct reply-to only.
    pub reply_to_prefixes: Vec<String>,
}

/// What a full queue does with a new message (`x-overflow`); quorum queues know these two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueueOverflow {
    /// The publish is nacked: a producer with confirms learns its message was not taken.
    RejectPublish,
    /// The oldest message is dropped (dead-lettered when the queue has a dead-letter exchange).
    DropHead,
}

impl QueueOverflow {
    /// Returns the `x-overflow` argument's value.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueOverflow::RejectPublish => "reject-publish",
            QueueOverflow::DropHead => "drop-head",
        }
    }
}

/// The largest `amqp.max_message_bytes` accepted: the broker's envelope decoder is built with
/// this bound (bincode's byte limit), and RabbitMQ's own default `max_message_size` is larger.
pub const MAX_MESSAGE_BYTES_CEILING: usize = 64 * 1024 * 1024;

/// Placeholder of `reply_to_prefixes` replaced by the namespace.
const NAMESPACE_PLACEHOLDER: &str = "{namespace}";

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            url: None,
            namespace: "bulwark".to_owned(),
            prefetch: 256,
            delivery_limit: 5,
            connect_timeout_ms: 5_000,
            confirm_timeout_ms: 10_000,
            heartbeat_secs: 10,
            reconnect_backoff_ms: 250,
            reconnect_backoff_max_ms: 5_000,
            max_restarts: 100,
            restarts_within_ms: 60_000,
            republish_interval_ms: 2_000,
            max_message_bytes: 1024 * 1024,
            queue_max_length_bytes: 1024 * 1024 * 1024,
            queue_overflow: QueueOverflow::RejectPublish,
            reply_to_prefixes: vec![format!("{NAMESPACE_PLACEHOLDER}.reply.")],
        }
    }
}

impl AmqpConfig {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn confirm_timeout(&self) -> Duration {
        Duration::from_millis(self.confirm_timeout_ms)
    }

    pub fn reconnect_backoff(&self) -> Duration {
        Duration::from_millis(self.reconnect_backoff_ms)
    }

    pub fn reconnect_backoff_max(&self) -> Duration {
        Duration::from_millis(self.reconnect_backoff_max_ms)
    }

    pub fn restarts_within(&self) -> Duration {
        Duration::from_millis(self.restarts_within_ms)
    }

    pub fn republish_interval(&self) -> Duration {
        Duration::from_millis(self.republish_interval_ms)
    }

    /// Returns `reply_to_prefixes` with `{namespace}` replaced by the namespace.
    pub fn resolved_reply_to_prefixes(&self) -> Vec<String> {
        self.reply_to_prefixes
            .iter()
            .map(|prefix| prefix.replace(NAMESPACE_PLACEHOLDER, &self.namespace))
            .collect()
    }
}

/// Checks the `[amqp]` section; returns the offending key and why.
pub(crate) fn validate_amqp(config: &AmqpConfig) -> Result<(), (&'static str, String)> {
    if let Some(url) = &config.url
        && !matches!(url.scheme(), "amqp" | "amqps")
    {
        return Err(("amqp.url", "must start with amqp:// or amqps://".to_owned()));
    }
    let valid_namespace = !config.namespace.is_empty()
        && config.namespace.len() <= 100
        && config
            .namespace
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid_namespace {
        return Err((
            "amqp.namespace",
            "must be 1 to 100 characters of letters, digits, `-`, `_` or `.`".to_owned(),
        ));
    }
    let positive: [(&'static str, u64); 9] = [
        ("amqp.prefetch", config.prefetch.into()),
        ("amqp.delivery_limit", config.delivery_limit.into()),
        ("amqp.connect_timeout_ms", config.connect_timeout_ms),
        ("amqp.confirm_timeout_ms", config.confirm_timeout_ms),
        ("amqp.reconnect_backoff_ms", config.reconnect_backoff_ms),
        (
            "amqp.reconnect_backoff_max_ms",
            config.reconnect_backoff_max_ms,
        ),
        ("amqp.republish_interval_ms", config.republish_interval_ms),
        ("amqp.max_restarts", config.max_restarts.into()),
        ("amqp.restarts_within_ms", config.restarts_within_ms),
    ];
    for (key, value) in positive {
        if value == 0 {
            return Err((key, "must be greater than 0".to_owned()));
        }
    }
    if config.heartbeat_secs > 600 {
        return Err((
            "amqp.heartbeat_secs",
            format!("must be 0 (off) to 600, got {}", config.heartbeat_secs),
        ));
    }
    if config.reconnect_backoff_max_ms < config.reconnect_backoff_ms {
        return Err((
            "amqp.reconnect_backoff_max_ms",
            "must be at least amqp.reconnect_backoff_ms".to_owned(),
        ));
    }
    if !(1024..=MAX_MESSAGE_BYTES_CEILING).contains(&config.max_message_bytes) {
        return Err((
            "amqp.max_message_bytes",
            format!("must be 1024 to {MAX_MESSAGE_BYTES_CEILING}"),
        ));
    }
    let max_message_bytes = config.max_message_bytes as u64;
    if config.queue_max_length_bytes != 0 && config.queue_max_length_bytes < max_message_bytes {
        return Err((
            "amqp.queue_max_length_bytes",
            "must be 0 (no limit) or at least amqp.max_message_bytes".to_owned(),
        ));
    }
    for prefix in config.resolved_reply_to_prefixes() {
        validate_reply_to_prefix(&prefix, &config.namespace)
            .map_err(|message| ("amqp.reply_to_prefixes", message))?;
    }
    Ok(())
}

/// Refuses a `reply_to` prefix that would let a producer name a queue it must not reach: an
/// empty one, one under RabbitMQ's reserved `amq.`, or one that Bulwark's own job and
/// dead-letter queues (`<namespace>.<kind>`, `<namespace>.dlq.<kind>`) could start with.
fn validate_reply_to_prefix(prefix: &str, namespace: &str) -> Result<(), String> {
    if prefix.is_empty() || prefix.len() > 200 {
        return Err("each prefix must be 1 to 200 bytes long".to_owned());
    }
    if prefix.starts_with("amq.") {
        return Err(format!(
            "`{prefix}`: amq. names are reserved (direct reply-to is always allowed)"
        ));
    }
    let own_queues = format!("{namespace}.");
    if own_queues.starts_with(prefix) {
        return Err(format!(
            "`{prefix}` would match the job queues `{own_queues}<kind>`"
        ));
    }
    if let Some(rest) = prefix.strip_prefix(&own_queues)
        && !rest.contains('.')
    {
        return Err(format!(
            "`{prefix}` may match a job queue of `{namespace}`: end it with a segment and a \
             dot, like `{namespace}.reply.`"
        ));
    }
    if prefix.starts_with(&format!("{namespace}.dlq.")) {
        return Err(format!("`{prefix}` would match the dead-letter queues"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the defaults validate and bad values are refused with their key named.
    #[test]
    fn amqp_section_is_validated() {
        assert_eq!(validate_amqp(&AmqpConfig::default()), Ok(()));
        let bad_url = AmqpConfig {
            url: Some(SecretUrl::new("http://broker")),
            ..AmqpConfig::default()
        };
        assert_eq!(validate_amqp(&bad_url).unwrap_err().0, "amqp.url");
        let bad_namespace = AmqpConfig {
            namespace: "has space".to_owned(),
            ..AmqpConfig::default()
        };
        assert_eq!(
            validate_amqp(&bad_namespace).unwrap_err().0,
            "amqp.namespace"
        );
        let zero_prefetch = AmqpConfig {
            prefetch: 0,
            ..AmqpConfig::default()
        };
        assert_eq!(
            validate_amqp(&zero_prefetch).unwrap_err().0,
            "amqp.prefetch"
        );
        let inverted = AmqpConfig {
            reconnect_backoff_max_ms: 10,
            ..AmqpConfig::default()
        };
        assert_eq!(
            validate_amqp(&inverted).unwrap_err().0,
            "amqp.reconnect_backoff_max_ms"
        );
        for max_message_bytes in [0, MAX_MESSAGE_BYTES_CEILING + 1] {
            let out_of_range = AmqpConfig {
                max_message_bytes,
                ..AmqpConfig::default()
            };
            assert_eq!(
                validate_amqp(&out_of_range).unwrap_err().0,
                "amqp.max_message_bytes"
            );
        }
        let queue_below_message = AmqpConfig {
            queue_max_length_bytes: 10,
            ..AmqpConfig::default()
        };
        assert_eq!(
            validate_amqp(&queue_below_message).unwrap_err().0,
            "amqp.queue_max_length_bytes"
        );
        let unlimited_queue = AmqpConfig {
            queue_max_length_bytes: 0,
            ..AmqpConfig::default()
        };
        assert_eq!(validate_amqp(&unlimited_queue), Ok(()));
    }

    /// Proves the default reply_to prefix follows the namespace, and that prefixes which would
    /// reach Bulwark's own queues or RabbitMQ's reserved names are refused.
    #[test]
    fn reply_to_prefixes_cannot_reach_bulwarks_own_queues() {
        let config = AmqpConfig {
            namespace: "shop".to_owned(),
            ..AmqpConfig::default()
        };
        assert_eq!(config.resolved_reply_to_prefixes(), vec!["shop.reply."]);
        assert_eq!(validate_amqp(&config), Ok(()));
        let direct_only = AmqpConfig {
            reply_to_prefixes: Vec::new(),
            ..AmqpConfig::default()
        };
        assert_eq!(validate_amqp(&direct_only), Ok(()));
        let accepted = ["replies.", "other-app.reply.", "{namespace}.replies.x"];
        for prefix in accepted {
            let config = AmqpConfig {
                reply_to_prefixes: vec![prefix.to_owned()],
                ..AmqpConfig::default()
            };
            assert_eq!(validate_amqp(&config), Ok(()), "{prefix}");
        }
        let refused = [
            "",
            "b",
            "bulwark",
            "{namespace}.",
            "bulwark.sentiment",
            "bulwark.dlq.x",
            "amq.gen-",
        ];
        for prefix in refused {
            let config = AmqpConfig {
                reply_to_prefixes: vec![prefix.to_owned()],
                ..AmqpConfig::default()
            };
            assert_eq!(
                validate_amqp(&config).unwrap_err().0,
                "amqp.reply_to_prefixes",
                "{prefix}"
            );
        }
    }
}
