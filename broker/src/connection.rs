use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use std::str::FromStr;

use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};

use crate::metrics::{BrokerConnected, LinkChanged};
use crate::{BrokerError, ProducerLimits, Topology};

/// What every broker link of a node is built with.
#[derive(Clone)]
pub struct BrokerSettings {
    /// `amqp://…`; kept out of `Debug`, it may hold a password.
    pub url: String,
    pub topology: Topology,
    /// Unacked deliveries per consumer.
    pub prefetch: u16,
    pub connect_timeout: Duration,
    pub confirm_timeout: Duration,
    /// Heartbeat proposed to the broker (seconds) when the URL does not set one.
    pub heartbeat_secs: u16,
    /// Names the node's connections in the broker (`rabbitmqctl list_connections name`).
    pub connection_name: String,
    /// What the consumers accept from producers: body size, `reply_to`.
    pub limits: ProducerLimits,
}

impl std::fmt::Debug for BrokerSettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("BrokerSettings")
            .field("topology", &self.topology)
            .field("prefetch", &self.prefetch)
            .field("connection_name", &self.connection_name)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Opens a connection, giving up after the connect timeout. The heartbeat is the settings'
/// unless the URL names one.
pub async fn connect(settings: &BrokerSettings, role: &str) -> Result<Connection, BrokerError> {
    let properties = ConnectionProperties::default()
        .with_connection_name(format!("{}/{role}", settings.connection_name).into());
    let mut uri = AMQPUri::from_str(&settings.url).map_err(BrokerError::InvalidUrl)?;
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = Some(settings.heartbeat_secs);
    }
    let connected = match tokio::time::timeout(
        settings.connect_timeout,
        Connection::connect_uri(uri, properties),
    )
    .await
    {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(BrokerError::Connect(Box::new(error))),
        Err(_) => Err(BrokerError::ConnectTimeout(settings.connect_timeout)),
    };
    BrokerConnected {
        role,
        is_opened: connected.is_ok(),
    }
    .emit();
    connected
}

/// The one connection a node's consumers share, each consumer on its own channel (RabbitMQ's
/// advice: a connection per process, a channel per consumer; a node has a consumer per kind and
/// priority band, and a connection each would cost the broker a socket, a process and a file
/// descriptor apiece). The consumers hold the connection; this keeps only a weak reference, so
/// the connection closes once the last consumer holding it stops. The first consumer that finds
/// it missing or lost opens a new one.
#[derive(Debug, Clone, Default)]
pub struct SharedConnection {
    current: Arc<tokio::sync::Mutex<Weak<Connection>>>,
}

impl SharedConnection {
    /// Returns the live shared connection, connecting first when there is none.
    pub async fn get(&self, settings: &BrokerSettings) -> Result<Arc<Connection>, BrokerError> {
        let mut current = self.current.lock().await;
        if let Some(connection) = current.upgrade()
            && connection.status().connected()
        {
            return Ok(connection);
        }
        let connection = Arc::new(connect(settings, "consumers").await?);
        *current = Arc::downgrade(&connection);
        Ok(connection)
    }
}

/// Whether each broker link of this node (the publisher, one consumer per kind) is up; the
/// `/ready` probe reports the broker down while any is not.
#[derive(Debug, Clone, Default)]
pub struct BrokerHealth {
    links: Arc<Mutex<BTreeMap<String, bool>>>,
}

impl BrokerHealth {
    /// Registers a link as down until it reports otherwise.
    pub fn register(&self, link: &str) {
        let mut links = self.lock();
        if !links.contains_key(link) {
            links.insert(link.to_owned(), false);
            LinkChanged { link, is_up: false }.emit();
        }
    }

    pub fn set(&self, link: &str, is_up: bool) {
        if self.lock().insert(link.to_owned(), is_up) != Some(is_up) {
            LinkChanged { link, is_up }.emit();
        }
    }

    /// Returns true when every registered link is up.
    pub fn is_up(&self) -> bool {
        let links = self.lock();
        !links.is_empty() && links.values().all(|is_up| *is_up)
    }

    /// Returns the links that are down, for the readiness message.
    pub fn down_links(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, is_up)| !**is_up)
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, bool>> {
        self.links.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
