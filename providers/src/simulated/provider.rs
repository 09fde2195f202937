use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::{FaultDice, FaultKnobs, FaultOutcome, SimulatedEngine};
use crate::{Completion, CompletionRequest, Provider, ProviderError};

/// The simulated engine in-process: no HTTP, the same answers and the same fault knobs (a
/// dropped connection and a malformed body become the errors an adapter would report).
#[derive(Debug, Clone)]
pub struct SimulatedProvider {
    name: String,
    engine: SimulatedEngine,
    faults: FaultKnobs,
    dice: Arc<FaultDice>,
}

impl SimulatedProvider {
    pub fn new(name: impl Into<String>, engine: SimulatedEngine, faults: FaultKnobs) -> Self {
        SimulatedProvider {
            name: name.into(),
            engine,
            faults,
            dice: Arc::new(FaultDice::new(0x5eed)),
        }
    }
}

#[async_trait]
impl Provider for SimulatedProvider {
    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ProviderError> {
        let started = Instant::now();
        let (delay, outcome) = self.dice.roll(&self.faults);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        match outcome {
            FaultOutcome::Answer => {}
            FaultOutcome::Hang => std::future::pending::<()>().await,
            FaultOutcome::Drop => {
                return Err(ProviderError::ConnectionFailed(
                    "simulated connection dropped".to_owned(),
                ));
            }
            FaultOutcome::Error => {
                return Err(ProviderError::Upstream {
                    status: 500,
                    message: "simulated server error".to_owned(),
                });
            }
            FaultOutcome::RateLimited { retry_after } => {
                return Err(ProviderError::RateLimited {
                    message: "simulated rate limit".to_owned(),
                    retry_after: Some(retry_after),
                });
            }
            FaultOutcome::Malformed => {
                return Err(ProviderError::MalformedResponse(
                    "simulated malformed body".to_owned(),
                ));
            }
        }
        let answer = self.engine.answer(request);
        Ok(Completion {
            text: answer.text,
            model: self.engine.model().to_owned(),
            provider: self.name.clone(),
            usage: answer.usage,
            latency: started.elapsed(),
        })
    }

    fn name(&self) -> &str {
        &self.name
    }
}
