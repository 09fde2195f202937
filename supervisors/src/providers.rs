//! The `providers` subsystem: one supervisor over one actor per configured provider.

use std::sync::Arc;
use std::time::Duration;

use bulwark_actors::{ProviderActor, ProviderActorParams, ProviderRoute, ProviderRouter};
use bulwark_core::Liveness;
use bulwark_providers::{Provider, ResilientProvider};

use crate::subsystem::{ChildShape, SubsystemShape, SubsystemSpec, actor_spec};
use crate::supervisor::SupervisionStrategy;

/// One configured provider, already wrapped in its resilience.
#[derive(Debug, Clone)]
pub struct ProviderSpec {
    pub provider: ResilientProvider,
    /// Providers tried in order when this one fails.
    pub fallbacks: Vec<String>,
}

/// What the `providers` subsystem is started with.
#[derive(Debug, Clone, Default)]
pub struct ProvidersSettings {
    pub providers: Vec<ProviderSpec>,
}

/// Time a caller waits beyond the provider's own call deadline, so that deadline (which
/// reports a precise error) normally fires first and this one only catches a wedged actor.
const CALL_TIMEOUT_MARGIN: Duration = Duration::from_millis(500);

/// The `providers` subsystem's shape. One-for-one: providers are independent upstreams, so one
/// failing says nothing of the others.
pub const SHAPE: SubsystemShape = SubsystemShape {
    name: "providers",
    strategy: SupervisionStrategy::OneForOne,
    limits_note_opt: None,
    condition_opt: Some("only when [providers.<name>] are configured"),
    children: &[PROVIDER],
};

const PROVIDER: ChildShape = ChildShape {
    name: "provider-<name>",
    role: "one actor per provider (breaker, limiter, bulkhead, retries)",
};

/// Returns the registered name of a provider's actor.
pub fn provider_actor_name(instance: &str, provider: &str) -> String {
    PROVIDER.registered_name(instance, provider)
}

impl ProvidersSettings {
    /// Returns the router that reaches these providers' actors by name. It can be built before
    /// the tree starts (it holds names, not actor references), so the job runner gets it too.
    pub fn router(&self, instance: &str) -> ProviderRouter {
        ProviderRouter::new(
            self.providers
                .iter()
                .map(|spec| ProviderRoute {
                    name: spec.provider.name().to_owned(),
                    actor_name: provider_actor_name(instance, spec.provider.name()),
                    fallbacks: spec.fallbacks.clone(),
                    call_timeout: spec.provider.params().call_deadline + CALL_TIMEOUT_MARGIN,
                    breaker_opt: Some(spec.provider.breaker().clone()),
                })
                .collect(),
        )
    }
}

/// Returns the `providers` subsystem and the router that reaches its actors; calls run as
/// tasks bounded by each provider's bulkhead.
pub(crate) fn subsystem(
    instance: &str,
    settings: &ProvidersSettings,
) -> SubsystemSpec<ProviderRouter> {
    let children = settings
        .providers
        .iter()
        .map(|spec| {
            let params = ProviderActorParams {
                provider: Arc::new(spec.provider.clone()),
                liveness: Liveness::default(),
            };
            let liveness = params.liveness.clone();
            actor_spec(
                &provider_actor_name(instance, spec.provider.name()),
                ProviderActor,
                params,
                Some(liveness),
            )
        })
        .collect();
    SubsystemSpec::new(&SHAPE, children, settings.router(instance))
}
