use std::time::SystemTime;

use async_trait::async_trait;
use bulwark_actors::{JobPublisher, PublishError};
use bulwark_core::{DEFAULT_JOB_PRIORITY, JobKind, TraceContext, new_traceparent, traceparent_in};
use bulwark_store::{DeadLetter, Job};
use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::envelope::{CONTENT_TYPE_JSON, ENVELOPE_VERSION, Envelope};
use crate::metrics::MessagesPublished;
use crate::{BrokerError, BrokerHealth, BrokerSettings, PriorityBand, Topology, connect};

/// The health link name of the publisher.
const PUBLISHER_LINK: &str = "publisher";

/// One message to publish.
#[derive(Debug, Clone)]
pub struct OutgoingMessage<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub body: &'a [u8],
    pub content_type: &'a str,
    pub message_id: Option<&'a str>,
    pub correlation_id: Option<&'a str>,
    /// Where the consumer sends the job's outcome.
    pub reply_to: Option<&'a str>,
    /// Extra headers besides `x-request-id` and `traceparent`.
    pub headers: Vec<(&'a str, String)>,
    pub request_id: Option<&'a str>,
    pub traceparent: Option<&'a str>,
    pub tracestate: Option<&'a str>,
    /// Unroutable messages come back as errors; off for events nobody may listen to.
    pub mandatory: bool,
}

/// Publishes persistent messages with confirms over one connection per node, reconnected on
/// the next publish after it fails. Publishes share the channel and wait for their own confirm
/// concurrently.
#[derive(Debug)]
pub struct BrokerPublisher {
    settings: BrokerSettings,
    health: BrokerHealth,
    link: Mutex<Option<PublishLink>>,
}

#[derive(Debug)]
struct PublishLink {
    connection: Connection,
    channel: Channel,
}

impl BrokerPublisher {
    pub fn new(settings: BrokerSettings, health: BrokerHealth) -> Self {
        health.register(PUBLISHER_LINK);
        BrokerPublisher {
            settings,
            health,
            link: Mutex::new(None),
        }
    }

    pub fn settings(&self) -> &BrokerSettings {
        &self.settings
    }

    pub fn health(&self) -> &BrokerHealth {
        &self.health
    }

    /// Returns the live confirm channel, connecting (and declaring the topology of every job
    /// kind) first when there is none.
    pub async fn channel(&self) -> Result<Channel, BrokerError> {
        let mut link = self.link.lock().await;
        if let Some(current) = link.as_ref()
            && current.connection.status().connected()
            && current.channel.status().connected()
        {
            return Ok(current.channel.clone());
        }
        if let Some(stale) = link.take() {
            close_quietly(stale.connection).await;
        }
        self.health.set(PUBLISHER_LINK, false);
        let connection = connect(&self.settings, "publisher").await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|error| BrokerError::Channel(Box::new(error)))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|error| BrokerError::Channel(Box::new(error)))?;
        let kinds: Vec<&str> = JobKind::ALL.iter().map(|kind| kind.as_str()).collect();
        self.settings.topology.declare(&channel, &kinds).await?;
        info!(namespace = %self.settings.topology.namespace, "broker publisher connected");
        *link = Some(PublishLink {
            connection,
            channel: channel.clone(),
        });
        self.health.set(PUBLISHER_LINK, true);
        Ok(channel)
    }

    /// Drops the link after a failure, so the next publish reconnects.
    async fn reset(&self) {
        let mut link = self.link.lock().await;
        if let Some(stale) = link.take() {
            close_quietly(stale.connection).await;
        }
        self.health.set(PUBLISHER_LINK, false);
    }

    /// Closes the connection (at shutdown).
    pub async fn close(&self) {
        self.reset().await;
    }

    /// Returns the live confirm channel. Opening one talks to the broker (channel, confirms,
    /// topology): bounded too, so a broker that accepts TCP but does not answer cannot hold
    /// callers.
    async fn channel_in_time(&self) -> Result<Channel, BrokerError> {
        match tokio::time::timeout(self.settings.confirm_timeout, self.channel()).await {
            Ok(channel) => channel,
            Err(_) => {
                self.reset().await;
                Err(BrokerError::ChannelTimeout(self.settings.confirm_timeout))
            }
        }
    }

    /// Publishes one persistent message and waits for the broker's confirm.
    pub async fn publish(&self, message: &OutgoingMessage<'_>) -> Result<(), BrokerError> {
        self.publish_many(std::slice::from_ref(message))
            .await
            .pop()
            .unwrap_or_else(|| Err(unconfirmed(message, "no answer", None)))
    }

    /// Publishes persistent messages pipelined: every message is sent before any confirm is
    /// awaited, and all confirms are awaited together within one confirm timeout. One answer
    /// per message, in order. A broken link (a failed send, no confirm in time) is dropped, so
    /// the next publish reconnects.
    pub async fn publish_many(
        &self,
        messages: &[OutgoingMessage<'_>],
    ) -> Vec<Result<(), BrokerError>> {
        let channel = match self.channel_in_time().await {
            Ok(channel) => channel,
            Err(error) => {
                MessagesPublished::failed(messages.len()).emit();
                return messages.iter().map(|_| Err(error.clone())).collect();
            }
        };
        // A publish with no traced caller (the outbox's republisher, a requeue) continues the
        // trace the message names instead of starting one.
        let traced_caller = TraceContext::of_span(&tracing::Span::current()).is_some();
        let spans: Vec<tracing::Span> = messages
            .iter()
            .map(|message| {
                let span = publish_span(message);
                if !traced_caller {
                    TraceContext {
                        traceparent: message.traceparent.map(str::to_owned),
                        tracestate: message.tracestate.map(str::to_owned),
                    }
                    .adopt_as_parent(&span);
                }
                span
            })
            .collect();
        let published = async {
            let sends = messages.iter().zip(&spans).map(|(message, span)| {
                let options = BasicPublishOptions {
                    mandatory: message.mandatory,
                    ..BasicPublishOptions::default()
                };
                channel.basic_publish(
                    message.exchange.into(),
                    message.routing_key.into(),
                    options,
                    message.body,
                    properties_of(message, span),
                )
            });
            let sent = futures::future::join_all(sends).await;
            let confirms = sent
                .into_iter()
                .zip(messages)
                .map(|(sent, message)| async move {
                    let confirm = sent
                        .map_err(|error| unconfirmed(message, "the channel failed", Some(error)))?;
                    confirm
                        .await
                        .map_err(|error| unconfirmed(message, "the channel failed", Some(error)))
                });
            futures::future::join_all(confirms).await
        };
        let Ok(confirmations) =
            tokio::time::timeout(self.settings.confirm_timeout, published).await
        else {
            self.reset().await;
            MessagesPublished::failed(messages.len()).emit();
            let waited = format!("no confirm within {:?}", self.settings.confirm_timeout);
            return messages
                .iter()
                .map(|message| Err(unconfirmed(message, &waited, None)))
                .collect();
        };
        if confirmations.iter().any(Result::is_err) {
            self.reset().await;
        }
        let mut published = MessagesPublished::default();
        let answers = confirmations
            .into_iter()
            .zip(messages)
            .map(|(confirmation, message)| match confirmation {
                Ok(Confirmation::Ack(None)) => {
                    published.num_confirmed += 1;
                    Ok(())
                }
                Ok(Confirmation::Ack(Some(_returned))) => {
                    published.num_returned += 1;
                    Err(unconfirmed(message, "returned unroutable", None))
                }
                Ok(Confirmation::Nack(_)) => {
                    published.num_nacked += 1;
                    Err(unconfirmed(message, "nacked by the broker", None))
                }
                Ok(Confirmation::NotRequested) => {
                    published.num_failed += 1;
                    Err(unconfirmed(message, "confirms not enabled", None))
                }
                Err(error) => {
                    published.num_failed += 1;
                    Err(error)
                }
            })
            .collect();
        published.emit();
        for (span, answer) in spans.iter().zip(&answers) {
            if Result::is_err(answer) {
                span.record("otel.status_code", "error");
            }
        }
        answers
    }

    /// Publishes an envelope to the jobs exchange, routed by its kind and the band of its
    /// priority (the kind's default band when it has none).
    pub async fn publish_envelope(
        &self,
        envelope: &Envelope,
        content_type: &str,
        trace: &MessageTrace<'_>,
    ) -> Result<(), BrokerError> {
        let body = envelope.encode(content_type).map_err(BrokerError::Encode)?;
        let exchange = self.settings.topology.jobs_exchange();
        let band = PriorityBand::of(envelope.priority.unwrap_or(DEFAULT_JOB_PRIORITY));
        let routing_key = Topology::job_routing_key(&envelope.kind, band);
        self.publish(&OutgoingMessage {
            exchange: &exchange,
            routing_key: &routing_key,
            body: &body,
            content_type,
            message_id: Some(&envelope.id),
            correlation_id: None,
            reply_to: None,
            headers: Vec::new(),
            request_id: trace.request_id,
            traceparent: trace.traceparent,
            tracestate: None,
            mandatory: true,
        })
        .await
    }
}

/// The tracing headers of a message.
#[derive(Debug, Clone, Copy, Default)]
pub struct MessageTrace<'a> {
    pub request_id: Option<&'a str>,
    pub traceparent: Option<&'a str>,
}

/// A stored job as the message that carries it.
struct JobMessage {
    body: Result<Vec<u8>, PublishError>,
    /// The kind's routing key in the band of the job's priority.
    routing_key: String,
    id: String,
    request_id: Option<String>,
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl JobMessage {
    fn new(job: &Job, trace: &TraceContext) -> JobMessage {
        let envelope = Envelope {
            v: ENVELOPE_VERSION,
            id: job.id.clone(),
            kind: job.kind.clone(),
            payload: job.payload.clone(),
            idempotency_key: None,
            deadline: None,
            priority: None,
            run_at: None,
            timeout_ms: None,
        };
        let body = envelope
            .encode(CONTENT_TYPE_JSON)
            .map_err(|error| PublishError {
                message: error.to_string(),
                retryable: false,
            });
        // A job published again (outbox, requeue) continues the trace that created it.
        let traceparent = trace
            .traceparent
            .clone()
            .or_else(|| job.trace_id.as_deref().map(traceparent_in));
        JobMessage {
            body,
            routing_key: Topology::job_routing_key(&job.kind, PriorityBand::of(job.priority)),
            id: job.id.clone(),
            request_id: job.request_id.clone(),
            traceparent,
            tracestate: trace.tracestate.clone(),
        }
    }

    /// Returns the message to the jobs exchange, routed by kind and priority band; `None`
    /// when it cannot be encoded.
    fn outgoing<'a>(&'a self, exchange: &'a str) -> Option<OutgoingMessage<'a>> {
        Some(OutgoingMessage {
            exchange,
            routing_key: &self.routing_key,
            body: self.body.as_deref().ok()?,
            content_type: CONTENT_TYPE_JSON,
            message_id: Some(&self.id),
            correlation_id: None,
            reply_to: None,
            headers: Vec::new(),
            request_id: self.request_id.as_deref(),
            traceparent: self.traceparent.as_deref(),
            tracestate: self.tracestate.as_deref(),
            mandatory: true,
        })
    }
}

#[async_trait]
impl JobPublisher for BrokerPublisher {
    async fn publish_job(&self, job: &Job, trace: &TraceContext) -> Result<(), PublishError> {
        self.publish_jobs(&[job], trace)
            .await
            .pop()
            .unwrap_or_else(|| {
                Err(PublishError {
                    message: "no answer".to_owned(),
                    retryable: true,
                })
            })
    }

    async fn publish_jobs(
        &self,
        jobs: &[&Job],
        trace: &TraceContext,
    ) -> Vec<Result<(), PublishError>> {
        let exchange = self.settings.topology.jobs_exchange();
        let job_messages: Vec<JobMessage> =
            jobs.iter().map(|job| JobMessage::new(job, trace)).collect();
        let outgoing: Vec<OutgoingMessage> = job_messages
            .iter()
            .filter_map(|job_message| job_message.outgoing(&exchange))
            .collect();
        let mut answers = self.publish_many(&outgoing).await.into_iter();
        job_messages
            .into_iter()
            .map(|job_message| {
                job_message.body.as_ref().map_err(Clone::clone)?;
                let answer = answers.next().unwrap_or_else(|| {
                    Err(BrokerError::Unconfirmed {
                        exchange: exchange.clone(),
                        routing_key: job_message.routing_key.clone(),
                        reason: "no answer".to_owned(),
                        source: None,
                    })
                });
                answer.map_err(|error| {
                    warn!(%error, job_id = %job_message.id, "failed to publish job");
                    PublishError {
                        retryable: error.is_retryable(),
                        message: error.to_string(),
                    }
                })
            })
            .collect()
    }

    async fn publish_dead_letter(&self, letter: &DeadLetter) -> Result<(), PublishError> {
        self.republish_dead_letter(letter).await
    }

    fn is_connected(&self) -> bool {
        self.health.is_up()
    }
}

/// Returns the AMQP properties of a message: persistent, stamped with the app and the time,
/// with `traceparent` (continued or new), `x-request-id` and its extra headers.
/// A producer span (OpenTelemetry's messaging conventions) for one message; its context is
/// the `traceparent` the message carries, so the consumer's span is its child.
fn publish_span(message: &OutgoingMessage<'_>) -> tracing::Span {
    tracing::debug_span!(
        "amqp.publish",
        otel.name = %format_args!("{} publish", message.exchange),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "rabbitmq",
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
        messaging.destination.name = message.exchange,
        messaging.rabbitmq.destination.routing_key = message.routing_key,
        messaging.message.id = message.message_id.unwrap_or(""),
        messaging.message.body.size = message.body.len(),
    )
}

fn properties_of(message: &OutgoingMessage<'_>, span: &tracing::Span) -> BasicProperties {
    let mut headers = FieldTable::default();
    let given = TraceContext {
        traceparent: message.traceparent.map(str::to_owned),
        tracestate: message.tracestate.map(str::to_owned),
    };
    let trace = given.onward_from(span);
    let traceparent = trace.traceparent.unwrap_or_else(new_traceparent);
    headers.insert(
        "traceparent".into(),
        AMQPValue::LongString(traceparent.into()),
    );
    if let Some(tracestate) = trace.tracestate {
        headers.insert(
            "tracestate".into(),
            AMQPValue::LongString(tracestate.into()),
        );
    }
    if let Some(request_id) = message.request_id {
        headers.insert(
            "x-request-id".into(),
            AMQPValue::LongString(request_id.into()),
        );
    }
    for (name, value) in &message.headers {
        headers.insert((*name).into(), AMQPValue::LongString(value.as_str().into()));
    }
    let timestamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or(0);
    let mut properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(message.content_type.into())
        .with_app_id("bulwark".into())
        .with_timestamp(timestamp)
        .with_headers(headers);
    if let Some(message_id) = message.message_id {
        properties = properties.with_message_id(message_id.into());
    }
    if let Some(correlation_id) = message.correlation_id {
        properties = properties.with_correlation_id(correlation_id.into());
    }
    if let Some(reply_to) = message.reply_to {
        properties = properties.with_reply_to(reply_to.into());
    }
    properties
}

/// Returns why a message was not confirmed; `source` is the channel's error, if it failed.
fn unconfirmed(
    message: &OutgoingMessage<'_>,
    reason: &str,
    source: Option<lapin::Error>,
) -> BrokerError {
    let reason = match &source {
        Some(error) => format!("{reason}: {error}"),
        None => reason.to_owned(),
    };
    BrokerError::Unconfirmed {
        exchange: message.exchange.to_owned(),
        routing_key: message.routing_key.to_owned(),
        reason,
        source: source.map(Box::new),
    }
}

/// Closes a connection that is being replaced, waiting at most a second for the broker's
/// close-ok: a broker that stopped answering must not hold the publisher's lock.
async fn close_quietly(connection: Connection) {
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        connection.close(200, "reconnecting".into()),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves generated trace parents have the W3C shape.
    #[test]
    fn traceparent_has_the_w3c_shape() {
        let traceparent = new_traceparent();
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(
            (parts[0], parts[1].len(), parts[2].len(), parts[3]),
            ("00", 32, 16, "01")
        );
    }
}
