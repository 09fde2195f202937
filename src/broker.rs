//! The RabbitMQ wiring of a node, built from `[amqp]`: the publisher the intake uses, and the
//! `ingress` supervisor's factory for the tree.

use std::sync::Arc;

use bulwark_actors::{JobIntake, RetryPolicy};
use bulwark_core::JobKind;

use crate::scheduling::dead_letter_policy;
use crate::settings::FromConfig;
use bulwark_broker::{
    BrokerHealth, BrokerPublisher, BrokerSettings, IngressParams, Overflow, ProducerLimits,
    QueueLimits, Topology, ingress_supervisor,
};
use bulwark_config::{Config, QueueOverflow};
use bulwark_store::Store;
use bulwark_supervisors::IngressFactory;
use tracing::{info, warn};

/// A node's broker parts; `None` from [`broker_setup`] when `amqp.url` is unset.
#[derive(Debug, Clone)]
pub struct BrokerSetup {
    pub publisher: Arc<BrokerPublisher>,
    pub intake: JobIntake,
    params: IngressParams,
}

/// Returns the broker settings described by `[amqp]`, or `None` when no URL is set.
pub fn broker_settings(config: &Config, connection_name: &str) -> Option<BrokerSettings> {
    let amqp = &config.amqp;
    let url = amqp.url.as_ref()?;
    Some(BrokerSettings {
        url: url.expose().to_owned(),
        topology: Topology {
            namespace: amqp.namespace.clone(),
            delivery_limit: amqp.delivery_limit,
            queue_limits: QueueLimits {
                max_length_bytes: (amqp.queue_max_length_bytes > 0)
                    .then_some(amqp.queue_max_length_bytes),
                overflow: match amqp.queue_overflow {
                    QueueOverflow::RejectPublish => Overflow::RejectPublish,
                    QueueOverflow::DropHead => Overflow::DropHead,
                },
            },
        },
        prefetch: amqp.prefetch,
        connect_timeout: amqp.connect_timeout(),
        confirm_timeout: amqp.confirm_timeout(),
        heartbeat_secs: amqp.heartbeat_secs,
        connection_name: connection_name.to_owned(),
        limits: ProducerLimits {
            max_message_bytes: amqp.max_message_bytes,
            reply_to_prefixes: amqp.resolved_reply_to_prefixes(),
        },
    })
}

// The configured body limit is checked before decoding; the decoder's own bound must not be
// smaller, or valid messages under the configured limit would be refused as malformed.
const _: () =
    assert!(bulwark_config::MAX_MESSAGE_BYTES_CEILING <= bulwark_broker::MAX_ENVELOPE_BYTES);

/// Builds the publisher and the intake that publishes through it, and connects the publisher
/// once (a broker that is down is not fatal: jobs wait in the outbox, consumers reconnect).
pub async fn broker_setup(
    config: &Config,
    store: &Store,
    node: &crate::service::NodeContext,
) -> Option<BrokerSetup> {
    let node_id = node.node_id.as_str();
    let settings = broker_settings(config, &format!("bulwark-{node_id}"))?;
    let health = BrokerHealth::default();
    let publisher = Arc::new(BrokerPublisher::new(settings.clone(), health.clone()));
    match publisher.channel().await {
        Ok(_) => info!(namespace = %settings.topology.namespace, "jobs travel over rabbitmq"),
        Err(error) => warn!(%error, "broker unreachable at start, jobs wait in the outbox"),
    }
    let intake = JobIntake::with_publisher(store.clone(), publisher.clone());
    let jobs = &config.jobs;
    let params = IngressParams {
        instance: node_id.to_owned(),
        settings,
        health,
        publisher: publisher.clone(),
        store: store.clone(),
        owner: node_id.to_owned(),
        lease: jobs.lease(),
        retry: RetryPolicy::from_config(config),
        job_defaults: node.job_defaults.clone(),
        controls: node.controls.clone(),
        kinds: JobKind::ALL
            .iter()
            .map(|kind| kind.as_str().to_owned())
            .collect(),
        dead_letters: config
            .dead_letters
            .enabled
            .then(|| dead_letter_policy(config)),
        republish_interval: config.amqp.republish_interval(),
        reconnect_backoff: config.amqp.reconnect_backoff(),
        reconnect_backoff_max: config.amqp.reconnect_backoff_max(),
        restart_intensity: bulwark_supervisors::RestartIntensity {
            max_restarts: config.amqp.max_restarts,
            within: config.amqp.restarts_within(),
        },
    };
    Some(BrokerSetup {
        publisher,
        intake,
        params,
    })
}

impl BrokerSetup {
    /// Returns the registered names of the consumers the `ingress` supervisor starts.
    pub fn consumer_names(&self) -> Vec<String> {
        self.params.consumer_names()
    }

    /// Returns the tree's factory for the `ingress` supervisor.
    pub fn ingress_factory(&self) -> IngressFactory {
        let params = self.params.clone();
        Box::new(move |executor, supervision| ingress_supervisor(&params, executor, supervision))
    }
}
