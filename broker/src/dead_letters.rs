//! The broker side of dead letters. Every message that lands in `<ns>.dlq.<kind>` (dead-lettered
//! by RabbitMQ, with its `x-death` header, or refused by Bulwark, with its reason header) is
//! stored as a dead letter and only then acked, so it is never lost between the queue and the
//! table. A requeued letter goes back to its original queue as it was received.
//!
//! The stored `headers` column is a JSON object: the message's `exchange`, `routing_key`,
//! `content_type`, `message_id`, `correlation_id`, `reply_to`, `timestamp`, `body_encoding`
//! (`utf8`, or `base64` for a body that is not UTF-8 text, e.g. bincode) and `headers` (every
//! AMQP header, `x-death` included, as JSON).
//!
//! A message larger than `amqp.max_message_bytes` is stored without its body
//! (`body_encoding` `omitted`, `body_bytes` its size): it is never decoded nor written to the
//! database, and it cannot be requeued.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bulwark_actors::{DeadLetterPolicy, PublishError, refresh_dead_letter_depth};
use bulwark_core::{TraceContext, now_ms, trace_id_of, traceparent_in};
use bulwark_store::{DeadLetter, NewDeadLetter, Store};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tracing::{Instrument, info, info_span, warn};

use crate::delivery::REJECT_REASON_HEADER;
use crate::envelope::{CONTENT_TYPE_JSON, Envelope};
use crate::metrics::DeadLetterBodyOmitted;
use crate::{BrokerPublisher, OutgoingMessage, Topology};

/// The header a requeued dead letter's message carries: the id of its letter.
pub const DEAD_LETTER_ID_HEADER: &str = "x-bulwark-dead-letter-id";

/// How long a message whose letter could not be stored waits before it is returned to its
/// dead-letter queue (it stays there, so nothing is lost while the database is down).
const STORE_RETRY_DELAY: Duration = Duration::from_secs(1);

/// The dead-letter depth gauge is refreshed (a grouped count over the table) at most this
/// often by the consumers, so a flood of dead letters does not run one count per message.
const DEPTH_REFRESH_INTERVAL_MS: u64 = 1_000;

/// What the dead-letter consumers store with.
#[derive(Debug, Clone)]
pub struct DeadLetterSink {
    store: Store,
    policy: DeadLetterPolicy,
    topology: Topology,
    /// Larger bodies are stored without the body.
    max_message_bytes: usize,
    /// Milliseconds since `started` at the last depth refresh, shared by the consumers.
    depth_refreshed_at_ms: Arc<AtomicU64>,
    started: Instant,
}

impl DeadLetterSink {
    pub fn new(
        store: Store,
        policy: DeadLetterPolicy,
        topology: Topology,
        max_message_bytes: usize,
    ) -> Self {
        DeadLetterSink {
            store,
            policy,
            topology,
            max_message_bytes,
            depth_refreshed_at_ms: Arc::default(),
            started: Instant::now(),
        }
    }

    /// Refreshes the depth gauge unless another delivery did within the interval.
    async fn refresh_depth(&self) {
        let now_ms = self.started.elapsed().as_millis() as u64 + DEPTH_REFRESH_INTERVAL_MS;
        let last_ms = self.depth_refreshed_at_ms.load(Ordering::Acquire);
        if now_ms < last_ms + DEPTH_REFRESH_INTERVAL_MS {
            return;
        }
        if self
            .depth_refreshed_at_ms
            .compare_exchange(last_ms, now_ms, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            refresh_dead_letter_depth(&self.store).await;
        }
    }
}

/// Stores one delivery of `<ns>.dlq.<kind>` as a dead letter, then acks it; when the store is
/// unavailable the message goes back to its queue after a pause.
pub(crate) async fn store_delivery(sink: &DeadLetterSink, kind: String, delivery: Delivery) {
    let letter = dead_letter_of(sink, &kind, &delivery);
    let span = info_span!(
        "dead_letter",
        kind = %kind,
        queue = %letter.queue,
        job_id = %letter.job_id,
        request_id = letter.request_id.as_deref().unwrap_or(""),
        trace_id = letter.trace_id.as_deref().unwrap_or(""),
    );
    // Dead-lettering joins the job's trace.
    if let Some(trace_id) = &letter.trace_id {
        TraceContext {
            traceparent: Some(traceparent_in(trace_id)),
            tracestate: None,
        }
        .adopt_as_parent(&span);
    }
    async {
        let settled = match sink.policy.admit(&sink.store, letter).await {
            Ok(stored) => {
                info!(stored, "broker dead letter stored");
                sink.refresh_depth().await;
                delivery.ack(BasicAckOptions::default()).await
            }
            Err(error) => {
                warn!(%error, "failed to store a broker dead letter, returning it to its queue");
                tokio::time::sleep(STORE_RETRY_DELAY).await;
                delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await
            }
        };
        if let Err(error) = settled {
            // The channel is gone; the message comes back and is stored again (same key).
            warn!(%error, "failed to settle a dead-letter delivery");
        }
    }
    .instrument(span)
    .await;
}

/// Why a message was dead-lettered, as a stored error.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cause {
    code: &'static str,
    message: String,
    retriable: bool,
}

/// Reads the cause: Bulwark's reason header first (the message itself is unusable), then a
/// body too large to store, then the newest `x-death` entry's reason.
fn cause_of(
    headers: Option<&FieldTable>,
    death: Option<&FieldTable>,
    oversized: Option<String>,
) -> Cause {
    if let Some(reason) = headers.and_then(|table| text_of(table, REJECT_REASON_HEADER)) {
        return Cause {
            code: "INVALID_MESSAGE",
            message: reason,
            retriable: false,
        };
    }
    if let Some(reason) = oversized {
        return Cause {
            code: "MESSAGE_TOO_LARGE",
            message: reason,
            retriable: false,
        };
    }
    let Some(death) = death else {
        return Cause {
            code: "DEAD_LETTERED",
            message: "published to the dead-letter exchange without x-death or a reason".to_owned(),
            retriable: false,
        };
    };
    let reason = text_of(death, "reason").unwrap_or_default();
    let queue = text_of(death, "queue").unwrap_or_default();
    let count = match death.inner().get("count") {
        Some(AMQPValue::LongLongInt(count)) => *count,
        Some(AMQPValue::LongInt(count)) => i64::from(*count),
        _ => 1,
    };
    let (code, what, retriable) = match reason.as_str() {
        "delivery_limit" => (
            "DELIVERY_LIMIT",
            "returned to its queue without an outcome until the delivery limit",
            true,
        ),
        "expired" => ("EXPIRED", "expired in its queue (message TTL)", true),
        "maxlen" => ("QUEUE_FULL", "dropped from its full queue", true),
        "rejected" => ("REJECTED", "rejected by a consumer", false),
        _ => ("DEAD_LETTERED", "dead-lettered by the broker", true),
    };
    Cause {
        code,
        message: format!("{what} ({reason} in {queue}, {count} time(s))"),
        retriable,
    }
}

fn text_of(table: &FieldTable, name: &str) -> Option<String> {
    match table.inner().get(name)? {
        AMQPValue::LongString(text) => Some(text.to_string()),
        AMQPValue::ShortString(text) => Some(text.as_str().to_owned()),
        _ => None,
    }
}

/// Returns the newest `x-death` entry (RabbitMQ keeps it first).
fn newest_death(headers: Option<&FieldTable>) -> Option<&FieldTable> {
    match headers?.inner().get("x-death")? {
        AMQPValue::FieldArray(deaths) => match deaths.as_slice().first()? {
            AMQPValue::FieldTable(death) => Some(death),
            _ => None,
        },
        _ => None,
    }
}

/// How many leading bytes of an oversized body without a message id are hashed for its key.
const OVERSIZED_KEY_PREFIX_BYTES: usize = 64 * 1024;

/// Builds the letter of a dead-lettered delivery. Its key is the message id (or the envelope's
/// id, or a hash of the body), so a message stored twice, or dead-lettered again after a
/// requeue, stays one letter. A body over the sink's limit is neither decoded nor kept.
fn dead_letter_of(sink: &DeadLetterSink, kind: &str, delivery: &Delivery) -> NewDeadLetter {
    let topology = &sink.topology;
    let properties = &delivery.properties;
    let headers = properties.headers().as_ref();
    let death = newest_death(headers);
    let num_bytes = delivery.data.len();
    let oversized = (num_bytes > sink.max_message_bytes).then(|| {
        format!(
            "body: {num_bytes} bytes, more than amqp.max_message_bytes ({})",
            sink.max_message_bytes
        )
    });
    let is_oversized = oversized.is_some();
    let cause = cause_of(headers, death, oversized);
    let content_type = properties
        .content_type()
        .as_ref()
        .map(|text| text.as_str().to_owned());
    let message_id = properties
        .message_id()
        .as_ref()
        .map(|id| id.as_str().to_owned());
    let envelope = if is_oversized {
        None
    } else {
        Envelope::decode(content_type.as_deref(), &delivery.data).ok()
    };
    let source_key = match (&message_id, &envelope) {
        (Some(id), _) => format!("amqp:{id}"),
        (None, Some(envelope)) => format!("amqp:{}", envelope.id),
        // Oversized bodies are keyed by their size and first bytes: hashing all of a hostile
        // body would hold the runtime; two such bodies alike that far are one letter.
        (None, None) if is_oversized => format!(
            "amqp:sha256:{num_bytes}:{:x}",
            Sha256::digest(&delivery.data[..OVERSIZED_KEY_PREFIX_BYTES.min(num_bytes)])
        ),
        (None, None) => format!("amqp:sha256:{:x}", Sha256::digest(&delivery.data)),
    };
    let job_id = match (&envelope, &message_id) {
        (Some(envelope), _) => envelope.job_key().to_owned(),
        (None, Some(id)) => id.clone(),
        (None, None) => source_key.trim_start_matches("amqp:").to_owned(),
    };
    let (message, body_encoding) = if is_oversized {
        DeadLetterBodyOmitted { kind, num_bytes }.emit();
        (String::new(), "omitted")
    } else {
        match std::str::from_utf8(&delivery.data) {
            Ok(text) => (text.to_owned(), "utf8"),
            Err(_) => (BASE64.encode(&delivery.data), "base64"),
        }
    };
    let traceparent = headers.and_then(|table| text_of(table, "traceparent"));
    let described = json!({
        "exchange": delivery.exchange.as_str(),
        "routing_key": delivery.routing_key.as_str(),
        "content_type": content_type,
        "message_id": message_id,
        "correlation_id": properties.correlation_id().as_ref().map(|id| id.as_str()),
        "reply_to": properties.reply_to().as_ref().map(|queue| queue.as_str()),
        "timestamp": properties.timestamp(),
        "body_encoding": body_encoding,
        "body_bytes": num_bytes,
        "headers": headers.map_or(Value::Null, table_json),
    });
    NewDeadLetter {
        source: "broker",
        source_key,
        job_id,
        queue: letter_queue(topology, kind, death),
        kind: kind.to_owned(),
        message,
        headers: Some(described.to_string()),
        error_code: cause.code.to_owned(),
        error_message: cause.message,
        retriable: cause.retriable,
        request_id: headers.and_then(|table| text_of(table, "x-request-id")),
        trace_id: traceparent.as_deref().and_then(trace_id_of),
        // Decided by the policy when it is admitted.
        status: "pending",
        next_retry_at_ms: None,
        dead_at_ms: now_ms(),
    }
}

/// Returns the queue a letter goes back to when requeued: the kind's job queue it died in
/// (one per priority band), else the kind's normal one. An `x-death` naming another queue is a
/// producer's forgery (anyone may publish to `<ns>.dlx`), and a requeue through the default
/// exchange would publish into it.
fn letter_queue(topology: &Topology, kind: &str, death: Option<&FieldTable>) -> String {
    let job_queue = topology.job_queue(kind);
    match death.and_then(|death| text_of(death, "queue")) {
        Some(queue) if topology.is_job_queue_of(&queue, kind) => queue,
        Some(queue) => {
            warn!(
                queue,
                job_queue, "x-death names a queue other than the kind's, ignored"
            );
            job_queue
        }
        None => job_queue,
    }
}

fn table_json(table: &FieldTable) -> Value {
    let entries: Map<String, Value> = table
        .inner()
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), amqp_json(value)))
        .collect();
    Value::Object(entries)
}

/// Converts an AMQP field value to plain JSON (timestamps stay Unix seconds, byte arrays
/// become base64).
fn amqp_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(flag) => json!(flag),
        AMQPValue::ShortShortInt(number) => json!(number),
        AMQPValue::ShortShortUInt(number) => json!(number),
        AMQPValue::ShortInt(number) => json!(number),
        AMQPValue::ShortUInt(number) => json!(number),
        AMQPValue::LongInt(number) => json!(number),
        AMQPValue::LongUInt(number) => json!(number),
        AMQPValue::LongLongInt(number) => json!(number),
        AMQPValue::Float(number) => json!(number),
        AMQPValue::Double(number) => json!(number),
        AMQPValue::DecimalValue(decimal) => {
            json!(f64::from(decimal.value) / 10f64.powi(i32::from(decimal.scale)))
        }
        AMQPValue::ShortString(text) => json!(text.as_str()),
        AMQPValue::LongString(text) => json!(text.to_string()),
        AMQPValue::FieldArray(values) => {
            Value::Array(values.as_slice().iter().map(amqp_json).collect())
        }
        AMQPValue::Timestamp(seconds) => json!(seconds),
        AMQPValue::FieldTable(table) => table_json(table),
        AMQPValue::ByteArray(bytes) => json!(BASE64.encode(bytes.as_slice())),
        AMQPValue::Void => Value::Null,
    }
}

/// The parts of a stored broker letter needed to publish its message again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StoredMessage {
    body: Vec<u8>,
    content_type: String,
    message_id: Option<String>,
    correlation_id: Option<String>,
    reply_to: Option<String>,
    traceparent: Option<String>,
}

fn stored_message(letter: &DeadLetter) -> Result<StoredMessage, String> {
    let described: Value = match &letter.headers {
        Some(text) => serde_json::from_str(text)
            .map_err(|error| format!("stored headers are not json: {error}"))?,
        None => Value::Null,
    };
    let field = |name: &str| described[name].as_str().map(str::to_owned);
    let body = match described["body_encoding"].as_str() {
        Some("omitted") => {
            return Err("the message's body was too large to store, it cannot be requeued".into());
        }
        Some("base64") => BASE64
            .decode(&letter.message)
            .map_err(|error| format!("stored body is not base64: {error}"))?,
        _ => letter.message.as_bytes().to_vec(),
    };
    Ok(StoredMessage {
        body,
        content_type: field("content_type").unwrap_or_else(|| CONTENT_TYPE_JSON.to_owned()),
        message_id: field("message_id"),
        correlation_id: field("correlation_id"),
        reply_to: field("reply_to"),
        traceparent: described["headers"]["traceparent"]
            .as_str()
            .map(str::to_owned),
    })
}

impl BrokerPublisher {
    /// Publishes a broker dead letter's message back to its original queue (through the
    /// default exchange, so it reaches exactly that queue), as it was received, with the
    /// letter's id in [`DEAD_LETTER_ID_HEADER`].
    pub async fn republish_dead_letter(&self, letter: &DeadLetter) -> Result<(), PublishError> {
        let message = stored_message(letter).map_err(|message| PublishError {
            message,
            retryable: false,
        })?;
        self.publish(&OutgoingMessage {
            exchange: "",
            routing_key: &letter.queue,
            body: &message.body,
            content_type: &message.content_type,
            message_id: message.message_id.as_deref(),
            correlation_id: message.correlation_id.as_deref(),
            reply_to: message.reply_to.as_deref(),
            headers: vec![(DEAD_LETTER_ID_HEADER, letter.id.clone())],
            request_id: letter.request_id.as_deref(),
            traceparent: message.traceparent.as_deref(),
            tracestate: None,
            mandatory: true,
        })
        .await
        .map_err(|error| PublishError {
            retryable: error.is_retryable(),
            message: error.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
        let mut table = FieldTable::default();
        for (name, value) in entries {
            table.insert((*name).into(), value.clone());
        }
        table
    }

    fn text(value: &str) -> AMQPValue {
        AMQPValue::LongString(value.into())
    }

    /// Proves each way into a dead-letter queue gets its own code and retriability.
    #[test]
    fn causes_name_the_reason_and_whether_a_retry_can_help() {
        let refused = table(&[(
            REJECT_REASON_HEADER,
            text("payload.texts: must not be empty"),
        )]);
        let cause = cause_of(Some(&refused), None, None);
        assert_eq!(cause.code, "INVALID_MESSAGE");
        assert_eq!(cause.message, "payload.texts: must not be empty");
        assert!(!cause.retriable);

        let limit = table(&[
            ("reason", text("delivery_limit")),
            ("queue", text("bulwark.sentiment.analyze")),
            ("count", AMQPValue::LongLongInt(1)),
        ]);
        let cause = cause_of(None, Some(&limit), None);
        assert_eq!(cause.code, "DELIVERY_LIMIT");
        assert!(cause.retriable);
        assert!(
            cause.message.contains("bulwark.sentiment.analyze"),
            "{}",
            cause.message
        );

        let rejected = table(&[("reason", text("rejected"))]);
        assert!(!cause_of(None, Some(&rejected), None).retriable);
        assert_eq!(cause_of(None, None, None).code, "DEAD_LETTERED");
        let too_large = cause_of(None, Some(&limit), Some("body: 9 bytes".to_owned()));
        assert_eq!(too_large.code, "MESSAGE_TOO_LARGE");
        assert!(!too_large.retriable);
    }

    /// Proves a requeued letter only ever goes back to its kind's job queue: an `x-death`
    /// naming another queue (forged by a producer publishing straight to the dead-letter
    /// exchange) is ignored.
    #[test]
    fn a_forged_x_death_queue_is_not_requeued_into() {
        let topology = Topology {
            namespace: "bulwark".to_owned(),
            delivery_limit: 5,
            queue_limits: crate::QueueLimits::default(),
        };
        let kind = "sentiment.analyze";
        let genuine = table(&[("queue", text("bulwark.sentiment.analyze"))]);
        let forged = table(&[("queue", text("payments.incoming"))]);
        for death in [None, Some(&genuine), Some(&forged)] {
            assert_eq!(
                letter_queue(&topology, kind, death),
                "bulwark.sentiment.analyze"
            );
        }
    }

    /// Proves headers become plain JSON, nested tables and arrays included.
    #[test]
    fn amqp_headers_become_plain_json() {
        let death = table(&[
            ("reason", text("delivery_limit")),
            ("count", AMQPValue::LongLongInt(2)),
            ("time", AMQPValue::Timestamp(1_700_000_000)),
            (
                "routing-keys",
                AMQPValue::FieldArray(vec![text("sentiment.analyze")].into()),
            ),
        ]);
        let headers = table(&[
            (
                "x-death",
                AMQPValue::FieldArray(vec![AMQPValue::FieldTable(death)].into()),
            ),
            ("x-flag", AMQPValue::Boolean(true)),
            ("x-bytes", AMQPValue::ByteArray(vec![0xff, 0x00].into())),
        ]);
        assert_eq!(
            table_json(&headers),
            json!({
                "x-death": [{
                    "reason": "delivery_limit",
                    "count": 2,
                    "time": 1_700_000_000,
                    "routing-keys": ["sentiment.analyze"],
                }],
                "x-flag": true,
                "x-bytes": "/wA=",
            })
        );
        assert_eq!(
            newest_death(Some(&headers)).and_then(|death| text_of(death, "reason")),
            Some("delivery_limit".to_owned())
        );
    }

    /// Proves a stored binary body (base64) and its properties come back byte for byte, and
    /// that a letter stored without its body (too large) is not published empty.
    #[test]
    fn a_stored_binary_message_is_published_as_it_was_received() {
        let body = vec![0x01, 0xff, 0xfe, 0x00];
        let letter = DeadLetter {
            id: "letter-1".to_owned(),
            source: "broker".to_owned(),
            source_key: "amqp:m-1".to_owned(),
            job_id: "m-1".to_owned(),
            queue: "bulwark.sentiment.analyze".to_owned(),
            kind: "sentiment.analyze".to_owned(),
            message: BASE64.encode(&body),
            headers: Some(
                json!({
                    "content_type": "application/x-bincode",
                    "message_id": "m-1",
                    "correlation_id": "c-1",
                    "reply_to": "replies",
                    "body_encoding": "base64",
                    "headers": {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
                })
                .to_string(),
            ),
            error_code: "DELIVERY_LIMIT".to_owned(),
            error_message: String::new(),
            retriable: true,
            retry_count: 0,
            request_id: None,
            trace_id: None,
            status: "parked".to_owned(),
            next_retry_at_ms: None,
            dead_at_ms: 0,
            created_at_ms: 0,
            updated_at_ms: 0,
        };
        let message = stored_message(&letter).expect("decodes");
        assert_eq!(message.body, body);
        let omitted = DeadLetter {
            message: String::new(),
            headers: Some(json!({"body_encoding": "omitted", "body_bytes": 2_000_000}).to_string()),
            ..letter.clone()
        };
        let refused = stored_message(&omitted).unwrap_err();
        assert!(refused.contains("too large"), "{refused}");
        assert_eq!(message.content_type, "application/x-bincode");
        assert_eq!(message.message_id.as_deref(), Some("m-1"));
        assert_eq!(message.correlation_id.as_deref(), Some("c-1"));
        assert_eq!(message.reply_to.as_deref(), Some("replies"));
        assert_eq!(
            message.traceparent.as_deref(),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        assert_eq!(
            trace_id_of(message.traceparent.as_deref().unwrap_or_default()).as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        assert_eq!(trace_id_of("garbage"), None);
    }
}
