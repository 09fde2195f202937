use std::sync::Arc;
use std::time::Duration;

use bulwark_actors::publish_and_mark;
use bulwark_core::{TraceContext, now_ms};
use bulwark_store::Store;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{info, warn};

use crate::BrokerPublisher;
use crate::metrics::OutboxDepthRead;

/// Drains the outbox: broker jobs stored but never confirmed (the broker was down when they
/// were submitted, or the node died between the insert and the confirm) are published again.
/// Consumers are idempotent, so a job published twice still runs once.
#[derive(Debug, Default, Clone, Copy)]
pub struct RepublisherActor;

#[derive(Debug, Clone)]
pub struct RepublisherParams {
    pub store: Store,
    pub publisher: Arc<BrokerPublisher>,
    pub interval: Duration,
    /// Rows younger than this are left to the submitter's own publish.
    pub grace: Duration,
}

#[derive(Debug)]
pub enum RepublisherMsg {
    Sweep,
}

/// Jobs republished per sweep.
const SWEEP_BATCH: u32 = 200;

impl Actor for RepublisherActor {
    type Msg = RepublisherMsg;
    type State = RepublisherParams;
    type Arguments = RepublisherParams;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        params: RepublisherParams,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(params.interval, || RepublisherMsg::Sweep);
        Ok(params)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        params: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RepublisherMsg::Sweep => sweep(params).await,
        }
        Ok(())
    }
}

async fn sweep(params: &RepublisherParams) {
    // Counted first: the backlog matters most while the broker is unreachable.
    match params.store.count_outbox(now_ms()).await {
        Ok(num_jobs) => OutboxDepthRead { num_jobs }.emit(),
        Err(error) => warn!(%error, "failed to count the outbox"),
    }
    // Keeps the publisher's link (and so the readiness report) fresh even when idle.
    if let Err(error) = params.publisher.channel().await {
        warn!(%error, "broker publisher cannot connect");
        return;
    }
    let created_before = now_ms() - params.grace.as_millis() as i64;
    let jobs = match params
        .store
        .unpublished_jobs(created_before, SWEEP_BATCH)
        .await
    {
        Ok(jobs) => jobs,
        Err(error) => {
            warn!(%error, "failed to read the outbox");
            return;
        }
    };
    if jobs.is_empty() {
        return;
    }
    let mut num_published = 0;
    for job in &jobs {
        if publish_and_mark(
            &params.store,
            params.publisher.as_ref(),
            job,
            &TraceContext::default(),
        )
        .await
        {
            num_published += 1;
        } else {
            break;
        }
    }
    info!(
        num_published,
        num_waiting = jobs.len(),
        "republished jobs from the outbox"
    );
}
