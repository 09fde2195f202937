use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One prompt for an answer engine. Unset parameters take the provider's configured defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompletionRequest {
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Asks the engine for a reproducible answer; the simulated engine always honours it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Sent upstream as `x-request-id`, so one audit item can be traced across systems.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl CompletionRequest {
    /// Returns a request for `prompt` with every parameter unset.
    pub fn new(prompt: impl Into<String>) -> Self {
        CompletionRequest {
            prompt: prompt.into(),
            ..CompletionRequest::default()
        }
    }

    /// Returns a rough count of the tokens this request may spend (prompt, system and answer),
    /// for the tokens-per-minute limit before the provider has reported its real usage.
    pub fn estimated_tokens(&self, default_max_tokens: u32) -> u32 {
        let prompt_chars = self.prompt.len() + self.system.as_ref().map_or(0, String::len);
        // About four characters per token for English text, as the providers' own guides say.
        let input_tokens = u32::try_from(prompt_chars.div_ceil(4)).unwrap_or(u32::MAX);
        input_tokens.saturating_add(self.max_tokens.unwrap_or(default_max_tokens))
    }
}

/// Tokens counted by the provider for one completion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u32,
    pub output_tokens: u32,
}

/// An engine's answer to a [`CompletionRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub text: String,
    /// The model that answered, as the provider reports it.
    pub model: String,
    /// The configured provider name that answered (a fallback's name when one answered).
    pub provider: String,
    pub usage: Usage,
    /// Time from the first attempt to the answer, retries and waits included.
    #[serde(with = "duration_ms")]
    pub latency: Duration,
}

/// Serializes a [`Duration`] as whole milliseconds (`latency_ms` reads better in results).
mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(duration.as_secs_f64() * 1_000.0)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let millis = f64::deserialize(deserializer)?;
        Ok(Duration::from_secs_f64(millis.max(0.0) / 1_000.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves unknown request fields are refused and a completion survives a JSON round trip.
    #[test]
    fn serde_round_trips() {
        let parsed: Result<CompletionRequest, _> =
            serde_json::from_str(r#"{"prompt":"hi","colour":"red"}"#);
        assert!(parsed.is_err());
        let completion = Completion {
            text: "hello".to_owned(),
            model: "sim-1".to_owned(),
            provider: "sim".to_owned(),
            usage: Usage {
                input_tokens: 3,
                output_tokens: 1,
            },
            latency: Duration::from_millis(12),
        };
        let json = serde_json::to_string(&completion).unwrap();
        let back: Completion = serde_json::from_str(&json).unwrap();
        assert_eq!(back, completion);
    }

    /// Proves the token estimate counts the prompt and the answer budget.
    #[test]
    fn estimated_tokens_counts_prompt_and_answer() {
        let mut request = CompletionRequest::new("x".repeat(40));
        assert_eq!(request.estimated_tokens(100), 110);
        request.max_tokens = Some(5);
        assert_eq!(request.estimated_tokens(100), 15);
    }
}
