//! The versioned message envelope, as `application/json` or `application/x-bincode`.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The only envelope version this build reads and writes.
pub const ENVELOPE_VERSION: u32 = 1;
pub const CONTENT_TYPE_JSON: &str = "application/json";
pub const CONTENT_TYPE_BINCODE: &str = "application/x-bincode";

/// A job message: `{"v":1,"id":"…","kind":"…","payload":{…},"idempotency_key"?:"…",
/// "deadline"?:"RFC3339","priority"?:0-9,"run_at"?:"RFC3339","timeout_ms"?:n}`. The
/// idempotency key of the job row is `idempotency_key` when set, else `id`, so a redelivered
/// or re-sent message never creates a second job. `priority`, `run_at` and `timeout_ms` (JSON
/// envelopes only: the bincode form is fixed by position) are the stored job's; the queue a
/// message waits in is its routing key's (`<kind>.high`, `<kind>`, `<kind>.low`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub v: u32,
    pub id: String,
    pub kind: String,
    pub payload: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// RFC 3339; a message delivered after it is dead-lettered instead of run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// 0 (lowest) to 9 (highest); unset: the kind's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// RFC 3339; a message delivered before it is stored and acked, and its job published
    /// again once it is due (at most a year ahead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<String>,
    /// How long one attempt may run, 1 to 86,400,000 ms; unset: the kind's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<i64>,
}

/// The bincode form. bincode cannot carry a self-describing `serde_json::Value`, so the
/// payload travels as its JSON text; everything else is the same as [`Envelope`]. Decoded
/// borrowing from the body: a string's claimed length is checked against the bytes that are
/// there before anything is allocated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct BincodeEnvelope<'body> {
    v: u32,
    id: &'body str,
    kind: &'body str,
    payload_json: &'body str,
    #[serde(borrow)]
    idempotency_key: Option<&'body str>,
    #[serde(borrow)]
    deadline: Option<&'body str>,
}

/// The largest body [`Envelope::decode`] reads, whatever the configured limit: bincode's byte
/// limit, so no length prefix can make the decoder claim more (the configured
/// `amqp.max_message_bytes` is checked before decoding and is at most this).
pub const MAX_ENVELOPE_BYTES: usize = 64 * 1024 * 1024;

/// bincode 2's standard configuration with [`MAX_ENVELOPE_BYTES`] as its byte limit.
fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_ENVELOPE_BYTES>()
}

/// Why a message cannot be a job; the text goes into the `x-bulwark-reject-reason` header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EnvelopeError(pub String);

impl Envelope {
    /// Returns the key that makes this message's job row unique.
    pub fn job_key(&self) -> &str {
        self.idempotency_key.as_deref().unwrap_or(&self.id)
    }

    /// Encodes as `content_type` (JSON or bincode).
    pub fn encode(&self, content_type: &str) -> Result<Vec<u8>, EnvelopeError> {
        match content_type {
            CONTENT_TYPE_JSON => serde_json::to_vec(self)
                .map_err(|error| EnvelopeError(format!("failed to encode json: {error}"))),
            CONTENT_TYPE_BINCODE => {
                let payload_json = self.payload.to_string();
                let wire = BincodeEnvelope {
                    v: self.v,
                    id: &self.id,
                    kind: &self.kind,
                    payload_json: &payload_json,
                    idempotency_key: self.idempotency_key.as_deref(),
                    deadline: self.deadline.as_deref(),
                };
                bincode::serde::encode_to_vec(&wire, bincode_config())
                    .map_err(|error| EnvelopeError(format!("failed to encode bincode: {error}")))
            }
            other => Err(EnvelopeError(format!("unsupported content type `{other}`"))),
        }
    }

    /// Decodes a message body by its content type (JSON when absent) and checks the version,
    /// the id, the kind's presence and the deadline's format. Payloads are validated by kind
    /// later, by the caller. Hostile bodies are refused, never trusted: nothing a body claims
    /// makes the decoder allocate more than a small multiple of the body's own length, and a
    /// body over [`MAX_ENVELOPE_BYTES`] is not read at all.
    pub fn decode(content_type_opt: Option<&str>, body: &[u8]) -> Result<Envelope, EnvelopeError> {
        if body.len() > MAX_ENVELOPE_BYTES {
            return Err(EnvelopeError(format!(
                "body: {} bytes, more than the {MAX_ENVELOPE_BYTES} an envelope may have",
                body.len()
            )));
        }
        let envelope = match content_type_opt.unwrap_or(CONTENT_TYPE_JSON) {
            CONTENT_TYPE_JSON => serde_json::from_slice::<Envelope>(body)
                .map_err(|error| EnvelopeError(format!("malformed json envelope: {error}")))?,
            CONTENT_TYPE_BINCODE => {
                let (wire, num_read): (BincodeEnvelope, usize) =
                    bincode::serde::borrow_decode_from_slice(body, bincode_config()).map_err(
                        |error| EnvelopeError(format!("malformed bincode envelope: {error}")),
                    )?;
                if num_read != body.len() {
                    return Err(EnvelopeError(format!(
                        "malformed bincode envelope: {} trailing bytes",
                        body.len() - num_read
                    )));
                }
                let payload = serde_json::from_str(wire.payload_json)
                    .map_err(|error| EnvelopeError(format!("payload_json is not json: {error}")))?;
                Envelope {
                    v: wire.v,
                    id: wire.id.to_owned(),
                    kind: wire.kind.to_owned(),
                    payload,
                    idempotency_key: wire.idempotency_key.map(str::to_owned),
                    deadline: wire.deadline.map(str::to_owned),
                    priority: None,
                    run_at: None,
                    timeout_ms: None,
                }
            }
            other => {
                return Err(EnvelopeError(format!("unsupported content type `{other}`")));
            }
        };
        if envelope.v != ENVELOPE_VERSION {
            return Err(EnvelopeError(format!(
                "v: unsupported envelope version {}, expected {ENVELOPE_VERSION}",
                envelope.v
            )));
        }
        if envelope.id.is_empty() || envelope.id.len() > 255 {
            return Err(EnvelopeError("id: must be 1 to 255 bytes long".to_owned()));
        }
        if let Some(key) = &envelope.idempotency_key
            && (key.is_empty() || key.len() > 255)
        {
            return Err(EnvelopeError(
                "idempotency_key: must be 1 to 255 bytes long".to_owned(),
            ));
        }
        if let Some(priority) = envelope.priority
            && priority > 9
        {
            return Err(EnvelopeError(format!(
                "priority: must be 0 to 9, got {priority}"
            )));
        }
        if let Some(timeout_ms) = envelope.timeout_ms
            && !(1..=86_400_000).contains(&timeout_ms)
        {
            return Err(EnvelopeError(format!(
                "timeout_ms: must be 1 to 86400000, got {timeout_ms}"
            )));
        }
        envelope.deadline_time()?;
        envelope.run_at_ms()?;
        Ok(envelope)
    }

    /// Returns when the job may first run, if the message says (Unix ms); at most a year
    /// ahead.
    pub fn run_at_ms(&self) -> Result<Option<i64>, EnvelopeError> {
        let Some(run_at) = &self.run_at else {
            return Ok(None);
        };
        let at = humantime::parse_rfc3339_weak(run_at)
            .map_err(|error| EnvelopeError(format!("run_at: not RFC 3339: {error}")))?;
        let at_ms = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| {
                i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
            });
        const YEAR_MS: i64 = 366 * 24 * 60 * 60 * 1000;
        if at_ms - bulwark_core::now_ms() > YEAR_MS {
            return Err(EnvelopeError(format!(
                "run_at: {run_at} is more than a year ahead"
            )));
        }
        Ok(Some(at_ms))
    }

    /// Returns the parsed deadline, if any.
    pub fn deadline_time(&self) -> Result<Option<SystemTime>, EnvelopeError> {
        let Some(deadline) = &self.deadline else {
            return Ok(None);
        };
        humantime::parse_rfc3339_weak(deadline)
            .map(Some)
            .map_err(|error| EnvelopeError(format!("deadline: not RFC 3339: {error}")))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sample() -> Envelope {
        Envelope {
            v: 1,
            id: "0192-abc".to_owned(),
            kind: "sentiment.analyze".to_owned(),
            payload: json!({"texts": ["good", "bad"], "strategy": "primary"}),
            idempotency_key: Some("order-7".to_owned()),
            deadline: Some("2030-01-01T00:00:00Z".to_owned()),
            priority: None,
            run_at: None,
            timeout_ms: None,
        }
    }

    /// Proves both encodings round-trip the same envelope.
    #[test]
    fn json_and_bincode_round_trip() {
        for content_type in [CONTENT_TYPE_JSON, CONTENT_TYPE_BINCODE] {
            let body = sample().encode(content_type).unwrap();
            assert_eq!(
                Envelope::decode(Some(content_type), &body).unwrap(),
                sample()
            );
        }
        let urgent = Envelope {
            priority: Some(9),
            run_at: Some("2026-01-01T00:00:00Z".to_owned()),
            timeout_ms: Some(5_000),
            ..sample()
        };
        let body = urgent.encode(CONTENT_TYPE_JSON).unwrap();
        assert_eq!(
            Envelope::decode(Some(CONTENT_TYPE_JSON), &body).unwrap(),
            urgent
        );
        let json_text = String::from_utf8(sample().encode(CONTENT_TYPE_JSON).unwrap()).unwrap();
        assert!(
            json_text.starts_with(r#"{"v":1,"id":"0192-abc""#),
            "{json_text}"
        );
    }

    /// Proves malformed bodies, wrong versions and bad fields are refused with a reason.
    #[test]
    fn bad_messages_are_refused_with_a_reason() {
        let cases: [(Option<&str>, Vec<u8>, &str); 9] = [
            (None, b"not json".to_vec(), "malformed json"),
            (
                Some(CONTENT_TYPE_JSON),
                br#"{"v":2,"id":"a","kind":"k","payload":{}}"#.to_vec(),
                "v:",
            ),
            (
                Some(CONTENT_TYPE_JSON),
                br#"{"v":1,"id":"","kind":"k","payload":{}}"#.to_vec(),
                "id:",
            ),
            (
                Some(CONTENT_TYPE_JSON),
                br#"{"v":1,"id":"a","kind":"k","payload":{},"deadline":"soon"}"#.to_vec(),
                "deadline:",
            ),
            (
                Some("text/plain"),
                b"hi".to_vec(),
                "unsupported content type",
            ),
            (
                Some(CONTENT_TYPE_JSON),
                br#"{"v":1,"id":"a","kind":"k","payload":{},"priority":10}"#.to_vec(),
                "priority: must be 0 to 9",
            ),
            (
                Some(CONTENT_TYPE_JSON),
                br#"{"v":1,"id":"a","kind":"k","payload":{},"timeout_ms":0}"#.to_vec(),
                "timeout_ms: must be 1 to 86400000",
            ),
            (
                Some(CONTENT_TYPE_JSON),
                br#"{"v":1,"id":"a","kind":"k","payload":{},"run_at":"later"}"#.to_vec(),
                "run_at: not RFC 3339",
            ),
            (
                Some(CONTENT_TYPE_JSON),
                br#"{"v":1,"id":"a","kind":"k","payload":{},"run_at":"2999-01-01T00:00:00Z"}"#
                    .to_vec(),
                "more than a year ahead",
            ),
        ];
        for (content_type, body, expected) in cases {
            let error = Envelope::decode(content_type, &body).unwrap_err();
            assert!(error.0.contains(expected), "{expected}: {error}");
        }
        assert_eq!(sample().job_key(), "order-7");
    }

    /// Proves the 10-byte bincode bomb of issue #13 (a first string claiming 2^40 bytes), which
    /// used to abort the process allocating 1 TiB, is refused with a reason.
    #[test]
    fn a_bincode_length_bomb_is_refused() {
        let mut bomb = vec![0x01];
        bomb.push(0xfd);
        bomb.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert_eq!(bomb.len(), 10);
        let error = Envelope::decode(Some(CONTENT_TYPE_BINCODE), &bomb).unwrap_err();
        assert!(error.0.starts_with("malformed bincode envelope"), "{error}");
    }

    /// Proves a valid bincode envelope followed by extra bytes is refused, not half-read.
    #[test]
    fn trailing_bytes_after_a_bincode_envelope_are_refused() {
        let mut body = sample().encode(CONTENT_TYPE_BINCODE).unwrap();
        body.push(0);
        let error = Envelope::decode(Some(CONTENT_TYPE_BINCODE), &body).unwrap_err();
        assert!(error.0.contains("trailing bytes"), "{error}");
    }
}
