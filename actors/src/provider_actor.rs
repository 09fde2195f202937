use std::sync::Arc;
use std::time::Duration;

use bulwark_core::Liveness;
use bulwark_providers::{Completion, CompletionRequest, Provider, ProviderError};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::warn;

/// What a [`ProviderActor`] is started with; cloned on every restart, so the provider (and
/// the breaker, limiter and bulkhead it carries) outlives the actor.
#[derive(Debug, Clone)]
pub struct ProviderActorParams {
    /// The configured provider, already wrapped in its resilience.
    pub provider: Arc<dyn Provider>,
    pub liveness: Liveness,
}

/// Fault injection for game days and supervision tests: makes the actor itself misbehave, as
/// opposed to the simulated engine's faults, which make the upstream misbehave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderChaos {
    /// Panics inside `handle`.
    Panic,
    /// Returns an error from `handle`.
    Fail,
    /// Blocks `handle` (marked busy) for this long, as a wedged actor would.
    Hang(Duration),
}

#[derive(Debug)]
pub enum ProviderMsg {
    /// Runs one call through the provider's resilience; the reply carries the outcome.
    Complete {
        request: CompletionRequest,
        reply: RpcReplyPort<Result<Completion, ProviderError>>,
    },
    Chaos(ProviderChaos),
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
        let _busy = state.liveness.busy();
        match message {
            ProviderMsg::Complete { request, reply } => {
                let provider = Arc::clone(&state.provider);
                tokio::spawn(async move {
                    let outcome = provider.complete(&request).await;
                    if reply.send(outcome).is_err() {
                        warn!(
                            provider = provider.name(),
                            "provider caller gave up before the answer"
                        );
                    }
                });
            }
            ProviderMsg::Chaos(ProviderChaos::Panic) => {
                panic!("provider actor panicked on purpose (chaos)")
            }
            ProviderMsg::Chaos(ProviderChaos::Fail) => {
                return Err("provider actor failed on purpose (chaos)".into());
            }
            ProviderMsg::Chaos(ProviderChaos::Hang(duration)) => tokio::time::sleep(duration).await,
        }
        Ok(())
    }
}
