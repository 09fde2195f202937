use std::time::Instant;

use async_trait::async_trait;

use crate::http::{HttpProviderParams, build_client, send_for_json};
use crate::wire::{ChatMessage, ChatRequest, ChatResponse};
use crate::{Completion, CompletionRequest, Provider, ProviderError, Usage};

/// OpenAI-compatible chat completions (`POST {base_url}/chat/completions`): OpenAI itself and
/// the many servers that speak its API (vLLM, Ollama, LiteLLM, the simulator).
#[derive(Debug, Clone)]
pub struct OpenAiProvider {
    params: HttpProviderParams,
    client: reqwest::Client,
    url: String,
}

impl OpenAiProvider {
    pub fn new(params: HttpProviderParams) -> Result<Self, ProviderError> {
        let client = build_client(&params)?;
        let url = format!("{}/chat/completions", params.base_url.trim_end_matches('/'));
        Ok(OpenAiProvider {
            params,
            client,
            url,
        })
    }

    fn body(&self, request: &CompletionRequest) -> ChatRequest {
        let mut messages = Vec::with_capacity(2);
        if let Some(system) = &request.system {
            messages.push(ChatMessage {
                role: "system".to_owned(),
                content: system.clone(),
            });
        }
        messages.push(ChatMessage {
            role: "user".to_owned(),
            content: request.prompt.clone(),
        });
        ChatRequest {
            model: self.params.model.clone(),
            messages,
            max_tokens: request.max_tokens,
            temperature: request.temperature,
            seed: request.seed,
        }
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ProviderError> {
        let started = Instant::now();
        let mut builder = self.client.post(&self.url).json(&self.body(request));
        if let Some(key) = &self.params.api_key_opt {
            builder = builder.bearer_auth(key.expose());
        }
        if let Some(request_id) = &request.request_id {
            builder = builder.header("x-request-id", request_id);
        }
        let chat: ChatResponse = send_for_json(builder, &self.params, "chat completion").await?;
        let Some(text) = chat
            .choices
            .into_iter()
            .next()
            .and_then(|choice| choice.message.content)
        else {
            return Err(ProviderError::MalformedResponse(format!(
                "chat completion from {} has no text choice",
                self.params.name
            )));
        };
        let usage = chat.usage.map_or(Usage::default(), |usage| Usage {
            input_tokens: usage.prompt_tokens,
            output_tokens: usage.completion_tokens,
        });
        Ok(Completion {
            text,
            model: chat.model,
            provider: self.params.name.clone(),
            usage,
            latency: started.elapsed(),
        })
    }

    fn name(&self) -> &str {
        &self.params.name
    }
}
