//! RabbitMQ helpers of the integration tests: the broker URL, a namespace per test, deleted
//! afterwards, and the config of a node that carries jobs over the broker.

use bulwark_config::SecretUrl;
use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection, ConnectionProperties};

/// The broker of the tests: 127.0.0.1:5672, or `BULWARK_TEST_AMQP_URL`.
pub fn amqp_url() -> String {
    std::env::var("BULWARK_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// Returns a namespace no other test uses.
pub fn unique_namespace() -> String {
    format!("bulwark-test-{}", uuid::Uuid::now_v7().simple())
}

/// Opens a confirm channel; fails the test, naming the URL, when the broker is unreachable.
pub async fn test_channel() -> (Connection, Channel) {
    let url = amqp_url();
    let connection = Connection::connect(&url, ConnectionProperties::default())
        .await
        .unwrap_or_else(|error| panic!("rabbitmq is unreachable at {url}: {error}"));
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm select");
    (connection, channel)
}

/// Returns the topology of a test namespace (for names and reply queues; its limits are the
/// defaults).
pub fn topology_of(namespace: &str) -> bulwark_broker::Topology {
    bulwark_broker::Topology {
        namespace: namespace.to_owned(),
        delivery_limit: 5,
        queue_limits: bulwark_broker::QueueLimits::default(),
    }
}

/// Deletes every queue and exchange of a test namespace; a failure fails the test, so no
/// test leaves quorum queues behind in the broker.
pub async fn delete_namespace(namespace: &str) {
    let (connection, channel) = test_channel().await;
    topology_of(namespace)
        .delete(&channel)
        .await
        .unwrap_or_else(|error| panic!("deleting namespace {namespace}: {error}"));
    let _ = connection.close(200, "done".into()).await;
}

/// Returns a config change that carries jobs over RabbitMQ in `namespace`, with short backoffs.
pub fn amqp_config(namespace: &str) -> impl FnOnce(&mut bulwark_config::Config) + use<> {
    let namespace = namespace.to_owned();
    move |config| {
        config.amqp.url = Some(SecretUrl::new(amqp_url()));
        config.amqp.namespace = namespace;
        config.amqp.reconnect_backoff_ms = 100;
        config.amqp.reconnect_backoff_max_ms = 1_000;
        config.amqp.republish_interval_ms = 200;
        config.amqp.connect_timeout_ms = 2_000;
        config.amqp.confirm_timeout_ms = 5_000;
    }
}
