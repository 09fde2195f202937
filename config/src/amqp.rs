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
    /// First delay before a consumer reconnects; doubles up to `reconnect_backoff_max_ms`.
    pub reconnect_backoff_ms: u64,
    pub reconnect_backoff_max_ms: u64,
    /// How often the republisher looks for stored jobs whose publish was never confirmed.
    pub republish_interval_ms: u64,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            url: None,
            namespace: "bulwark".to_owned(),
            prefetch: 256,
            delivery_limit: 5,
            connect_timeout_ms: 5_000,
            confirm_timeout_ms: 10_000,
            reconnect_backoff_ms: 250,
            reconnect_backoff_max_ms: 5_000,
            republish_interval_ms: 2_000,
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

    pub fn republish_interval(&self) -> Duration {
        Duration::from_millis(self.republish_interval_ms)
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
    let positive: [(&'static str, u64); 7] = [
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
    ];
    for (key, value) in positive {
        if value == 0 {
            return Err((key, "must be greater than 0".to_owned()));
        }
    }
    if config.reconnect_backoff_max_ms < config.reconnect_backoff_ms {
        return Err((
            "amqp.reconnect_backoff_max_ms",
            "must be at least amqp.reconnect_backoff_ms".to_owned(),
        ));
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
    }
}
