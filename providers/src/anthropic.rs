use std::time::Instant;

use async_trait::async_trait;

use crate::http::{HttpProviderParams, build_client, send_for_json};
use crate::wire::{MessagesContent, MessagesRequest, MessagesResponse, MessagesTurn};
use crate::{Completion, CompletionRequest, Provider, ProviderError, Usage};

/// The `anthropic-version` header every Messages API call carries.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// The Anthropic Messages API (`POST {base_url}/messages`).
#[derive(Debug, Clone)]
pub struct AnthropicProvider {
    params: HttpProviderParams,
    client: reqwest::Client,
    url: String,
}

impl AnthropicProvider {
    pub fn new(params: HttpProviderParams) -> Result<Self, ProviderError> {
        let client = build_client(&params)?;
        let url = format!("{}/messages", params.base_url.trim_end_matches('/'));
        Ok(AnthropicProvider {
            params,
            client,
            url,
        })
    }

    fn body(&self, request: &CompletionRequest) -> MessagesRequest {
        MessagesRequest {
            model: self.params.model.clone(),
            max_tokens: request.max_tokens.unwrap_or(self.params.default_max_tokens),
            messages: vec![MessagesTurn {
                role: "user".to_owned(),
                content: MessagesContent::Text(request.prompt.clone()),
            }],
            system: request.system.clone(),
            temperature: request.temperature,
        }
    }
}

#[async_trait]
impl Provider for AnthropicProvider {
    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ProviderError> {
        let started = Instant::now();
        let mut builder = self
            .client
            .post(&self.url)
            .header("anthropic-version", ANTHROPIC_VERSION)
            .json(&self.body(request));
        if let Some(key) = &self.params.api_key_opt {
            builder = builder.header("x-api-key", key.expose());
        }
        if let Some(request_id) = &request.request_id {
            builder = builder.header("x-request-id", request_id);
        }
        // The Messages API has no seed; the simulator reads this header, real servers ignore it.
        if let Some(seed) = request.seed {
            builder = builder.header("x-bulwark-seed", seed.to_string());
        }
        let message: MessagesResponse = send_for_json(builder, &self.params, "message").await?;
        let text: String = message
            .content
            .iter()
            .filter(|block| block.kind == "text")
            .filter_map(|block| block.text.as_deref())
            .collect();
        if text.is_empty() {
            return Err(ProviderError::MalformedResponse(format!(
                "message from {} has no text block",
                self.params.name
            )));
        }
        Ok(Completion {
            text,
            model: message.model,
            provider: self.params.name.clone(),
            usage: Usage {
                input_tokens: message.usage.input_tokens,
                output_tokens: message.usage.output_tokens,
            },
            latency: started.elapsed(),
        })
    }

    fn name(&self) -> &str {
        &self.params.name
    }
}
