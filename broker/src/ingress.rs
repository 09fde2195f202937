use std::sync::Arc;
use std::time::Duration;

use bulwark_actors::{AttemptCore, DeadLetterPolicy, JobControls, JobExecutor, RetryPolicy};
use bulwark_core::Liveness;
use bulwark_store::Store;
use bulwark_supervisors::{
    ChildSpec, INGRESS, INGRESS_REPUBLISHER, RestartIntensity, RestartLimits, SubsystemSpec,
    SupervisionSettings, actor_spec,
};

use futures::FutureExt;

use crate::consumer::{DEAD_LETTERS_LINK, JOBS_LINK, link_name};

use crate::{
    BrokerHealth, BrokerPublisher, BrokerSettings, ConsumerActor, ConsumerParams, ConsumerRole,
    DeadLetterSink, DeliveryContext, DeliveryWrites, PriorityBand, RepublisherActor,
    RepublisherParams, SharedConnection, drain_consumers,
};

/// What the `ingress` subsystem is built with (all but the executor, which the tree builds).
#[derive(Debug, Clone)]
pub struct IngressParams {
    /// Prefix of registered actor names, unique per process.
    pub instance: String,
    pub settings: BrokerSettings,
    pub health: BrokerHealth,
    pub publisher: Arc<BrokerPublisher>,
    pub store: Store,
    /// Lease owner of jobs this node runs.
    pub owner: String,
    pub lease: Duration,
    pub retry: RetryPolicy,
    /// Attempts, priority and timeout of jobs created from messages, by kind.
    pub job_defaults: bulwark_core::JobDefaults,
    /// Where cancels reach this node's attempts, and the kinds paused.
    pub controls: JobControls,
    /// One consumer per kind and priority band.
    pub kinds: Vec<String>,
    /// How stored broker dead letters are retried; `None` when this node runs no dead-letter
    /// actor, and so no dead-letter consumers (the messages wait in their queues).
    pub dead_letters: Option<DeadLetterPolicy>,
    pub republish_interval: Duration,
    /// Restart backoff of the consumers: a broker outage is waited out, not escalated.
    pub reconnect_backoff: Duration,
    pub reconnect_backoff_max: Duration,
    /// Restarts allowed before the `ingress` supervisor escalates (`amqp.max_restarts` within
    /// `amqp.restarts_within_ms`).
    pub restart_intensity: RestartIntensity,
}

/// Returns the registered name of a consumer actor.
fn consumer_actor_name(instance: &str, link_name: &str) -> String {
    format!("{instance}/{}", link_name.replace(':', "-"))
}

impl IngressParams {
    /// Returns the registered names of the consumers `ingress_supervisor` starts, for
    /// draining them at shutdown.
    pub fn consumer_names(&self) -> Vec<String> {
        let mut links: Vec<(&str, PriorityBand)> = PriorityBand::ALL
            .into_iter()
            .map(|band| (JOBS_LINK, band))
            .collect();
        if self.dead_letters.is_some() {
            links.push((DEAD_LETTERS_LINK, PriorityBand::Normal));
        }
        links
            .into_iter()
            .flat_map(|(prefix, band)| {
                self.kinds.iter().map(move |kind| {
                    consumer_actor_name(&self.instance, &link_name(prefix, kind, band))
                })
            })
            .collect()
    }
}

/// Returns the `ingress` subsystem (its shape is [`INGRESS`], drawn in the tree): one consumer per kind and priority band, one dead-letter consumer per kind when this node runs
/// dead letters, and the republisher. Its restart limits are its own: the configured reconnect
/// backoff (`amqp.reconnect_backoff_ms` .. `amqp.reconnect_backoff_max_ms`) and restart
/// intensity (`amqp.max_restarts` within `amqp.restarts_within_ms`), sized for broker outages
/// rather than `[supervision]`'s; hang detection and draining follow `[supervision]` and `[shutdown]`.
pub fn ingress_supervisor(
    params: &IngressParams,
    executor: JobExecutor,
    supervision: SupervisionSettings,
) -> SubsystemSpec<()> {
    let context = Arc::new(DeliveryContext {
        store: params.store.clone(),
        writes: DeliveryWrites::spawn(&params.store),
        attempt: AttemptCore {
            executor,
            retry: params.retry,
            record_deadline: params.lease / 2,
            controls: params.controls.clone(),
        },
        publisher: params.publisher.clone(),
        owner: params.owner.clone(),
        lease: params.lease,
        job_defaults: params.job_defaults.clone(),
    });
    // A job consumer per priority band (each band its own queue), a dead-letter one per kind.
    let mut roles: Vec<(ConsumerRole, PriorityBand)> = PriorityBand::ALL
        .into_iter()
        .map(|band| (ConsumerRole::Jobs(context.clone()), band))
        .collect();
    if let Some(policy) = params.dead_letters {
        let sink = Arc::new(DeadLetterSink::new(
            params.store.clone(),
            policy,
            params.settings.topology.clone(),
            params.settings.limits.max_message_bytes,
        ));
        roles.push((ConsumerRole::DeadLetters(sink), PriorityBand::Normal));
    }
    let connection = SharedConnection::default();
    let mut children: Vec<ChildSpec> = Vec::new();
    for (role, band) in &roles {
        for kind in &params.kinds {
            let consumer_params = ConsumerParams {
                settings: params.settings.clone(),
                kind: kind.clone(),
                band: *band,
                role: role.clone(),
                connection: connection.clone(),
                health: params.health.clone(),
                liveness: Liveness::default(),
            };
            let link_name = consumer_params.link_name();
            params.health.register(&link_name);
            let liveness = consumer_params.liveness.clone();
            let actor_name = consumer_actor_name(&params.instance, &link_name);
            let mut spec = actor_spec(&actor_name, ConsumerActor, consumer_params, Some(liveness));
            // An operator's stop or restart of the consumer (or of `ingress`) lets its
            // deliveries in flight finish first; the rest stay in the queue.
            let drain_timeout = supervision.drain_timeout;
            spec.drain = Some(Arc::new(move || {
                let names = vec![actor_name.clone()];
                async move {
                    let unfinished = drain_consumers(&names, drain_timeout).await;
                    tracing::info!(unfinished, "consumer drained for an operator");
                }
                .boxed()
            }));
            children.push(spec);
        }
    }
    children.push(actor_spec(
        &INGRESS_REPUBLISHER.registered_name(&params.instance, ""),
        RepublisherActor,
        RepublisherParams {
            store: params.store.clone(),
            publisher: params.publisher.clone(),
            interval: params.republish_interval,
            grace: params.republish_interval,
        },
        None,
    ));
    SubsystemSpec::new(&INGRESS, children, ()).with_limits(RestartLimits {
        intensity: params.restart_intensity,
        backoff_base: params.reconnect_backoff,
        backoff_max: params.reconnect_backoff_max,
    })
}
