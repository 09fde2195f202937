use std::sync::Arc;

use bulwark_core::{HandledMessage, Liveness};

use crate::DescribeMessage;
use bulwark_providers::{Completion, CompletionRequest, Provider, ProviderError};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::{Instrument, warn};

/// What a [`ProviderActor`] is started with; cloned on every restart, so the provider (and
/// the breaker, limiter and bulkhead it carries) outlives the actor.
#[derive(Debug, Clone)]
pub struct ProviderActorParams {
    /// The configured provider, already wrapped in its resilience.
    pub provider: Arc<dyn Provider>,
    pub liveness: Liveness,
}

#[derive(Debug)]
pub enum ProviderMsg {
    /// Runs one call through the provider's resilience; the reply carries the outcome.
    Complete {
        request: CompletionRequest,
        reply: RpcReplyPort<Result<Completion, ProviderError>>,
        /// The caller's span: the call runs in it, so its trace continues to the provider.
        span: tracing::Span,
    },
    /// Game-day fault (the `chaos` feature): makes the actor itself panic, error or hang, as
    /// opposed to the simulated engine's faults, which make the upstream misbehave.
    #[cfg(feature = "chaos")]
    Chaos(crate::Fault),
}

impl DescribeMessage for ProviderMsg {
    fn describe(&self) -> HandledMessage {
        match self {
            ProviderMsg::Complete { .. } => {
                HandledMessage::new("ProviderMsg::Complete", "run one provider call")
            }
            #[cfg(feature = "chaos")]
            ProviderMsg::Chaos(fault) => fault.describe(),
        }
    }
}

/// The supervised, addressable front of one configured provider. Each call runs as its own
/// task, so the actor's mailbox never waits on an upstream: concurrency is bounded by the
/// provider's bulkhead, not by the actor. A call whose task dies drops its reply port, so the
/// caller gets an error at once instead of waiting for its deadline.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProviderActor;

impl Actor for ProviderActor {
    type Msg = ProviderMsg;
    type State = ProviderActorParams;
    type Arguments = ProviderActorParams;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        params: ProviderActorParams,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(params)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let _busy = state.liveness.busy_with(message.describe());
        match message {
            ProviderMsg::Complete {
                request,
                reply,
                span,
            } => {
                let provider = Arc::clone(&state.provider);
                let call = async move {
                    let outcome = provider.complete(&request).await;
                    if reply.send(outcome).is_err() {
                        warn!(
                            provider = provider.name(),
                            "provider caller gave up before the answer"
                        );
                    }
                };
                tokio::spawn(call.instrument(span));
            }
            #[cfg(feature = "chaos")]
            ProviderMsg::Chaos(fault) => fault.commit("provider actor").await?,
        }
        Ok(())
    }
}
