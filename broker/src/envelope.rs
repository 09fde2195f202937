//! The versioned message envelope, as `application/json` or `application/x-bincode`.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The only envelope version this build reads and writes.
pub const ENVELOPE_VERSION: u32 = 1;
pub const CONTENT_TYPE_JSON: &str = "application/json";
pub const CONTENT_TYPE_BINCODE: &str = "application/x-bincode";

/// A job message: `{"v":1,"id":"…","kind":"…","payload":{…},"idempotency_key"?:"…",
/// "deadline"?:"RFC3339"}`. The idempotency key of the job row is `idempotency_key` when set,
/// else `id`, so a redelivered or re-sent message never creates a second job.
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
}

/// The bincode form. bincode cannot carry a self-describing `serde_json::Value`, so the
/// payload travels as its JSON text; everything else is the same as [`Envelope`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct BincodeEnvelope {
    v: u32,
    id: String,
    kind: String,
    payload_json: String,
    idempotency_key: Option<String>,
    deadline: Option<String>,
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
                let wire = BincodeEnvelope {
                    v: self.v,
                    id: self.id.clone(),
                    kind: self.kind.clone(),
                    payload_json: self.payload.to_string(),
                    idempotency_key: self.idempotency_key.clone(),
                    deadline: self.deadline.clone(),
                };
                bincode::serde::encode_to_vec(&wire, bincode::config::standard())
                    .map_err(|error| EnvelopeError(format!("failed to encode bincode: {error}")))
            }
            other => Err(EnvelopeError(format!("unsupported content type `{other}`"))),
        }
    }

    /// Decodes a message body by its content type (JSON when absent) and checks the version,
    /// the id, the kind's presence and the deadline's format. Payloads are validated by kind
    /// later, by the caller.
    pub fn decode(content_type_opt: Option<&str>, body: &[u8]) -> Result<Envelope, EnvelopeError> {
        let envelope = match content_type_opt.unwrap_or(CONTENT_TYPE_JSON) {
            CONTENT_TYPE_JSON => serde_json::from_slice::<Envelope>(body)
                .map_err(|error| EnvelopeError(format!("malformed json envelope: {error}")))?,
            CONTENT_TYPE_BINCODE => {
                let (wire, _): (BincodeEnvelope, usize) =
                    bincode::serde::decode_from_slice(body, bincode::config::standard()).map_err(
                        |error| EnvelopeError(format!("malformed bincode envelope: {error}")),
                    )?;
                let payload = serde_json::from_str(&wire.payload_json)
                    .map_err(|error| EnvelopeError(format!("payload_json is not json: {error}")))?;
                Envelope {
                    v: wire.v,
                    id: wire.id,
                    kind: wire.kind,
                    payload,
                    idempotency_key: wire.idempotency_key,
                    deadline: wire.deadline,
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
        envelope.deadline_time()?;
        Ok(envelope)
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
        let json_text = String::from_utf8(sample().encode(CONTENT_TYPE_JSON).unwrap()).unwrap();
        assert!(
            json_text.starts_with(r#"{"v":1,"id":"0192-abc""#),
            "{json_text}"
        );
    }

    /// Proves malformed bodies, wrong versions and bad fields are refused with a reason.
    #[test]
    fn bad_messages_are_refused_with_a_reason() {
        let cases: [(Option<&str>, Vec<u8>, &str); 5] = [
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
        ];
        for (content_type, body, expected) in cases {
            let error = Envelope::decode(content_type, &body).unwrap_err();
            assert!(error.0.contains(expected), "{expected}: {error}");
        }
        assert_eq!(sample().job_key(), "order-7");
    }
}
