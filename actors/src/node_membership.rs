//! [`NodeMembershipActor`]: writes this node's heartbeat to the store, fences nodes that went
//! silent so their jobs run elsewhere within seconds, and stops this node's own attempts when
//! another node fenced it.
//!
//! The contract with the store ([`bulwark_store::Store::fence_silent_nodes`]): a node silent
//! for `dead_after` (by the database's clock) is fenced by the first live node to look, and its
//! running jobs' leases expire at once, so both transports' claimers take them on their next
//! pass. A node that was only slow finds its heartbeat refused, aborts every attempt it runs
//! (their outcomes would be refused anyway: outcomes are fenced by lease owner and attempt),
//! hands back what it still holds, and registers again under a new incarnation.
//!
//! A node sweeps only after its own heartbeats have succeeded for `dead_after`: after a
//! database outage every heartbeat is old, and the first node back must not fence the others
//! before they had the chance to write theirs.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bulwark_core::{HandledMessage, Liveness, now_ms};
use bulwark_store::{Heartbeat, NodeRegistration, Store, StoreError};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{debug, error, info, warn};

use crate::InFlightJobs;
use crate::describe::DescribeMessage;
use crate::metrics::{ClockFollowed, NodeFencedSelf, NodeHeartbeatFailed, NodesFenced};

/// This process's name in `lease_owner` and its current incarnation, shared by the membership
/// actor's restarts and the shutdown path (which marks the node as left).
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    node_id: String,
    incarnation: Arc<Mutex<String>>,
}

impl NodeIdentity {
    /// Returns an identity with a fresh incarnation.
    pub fn new(node_id: impl Into<String>) -> Self {
        NodeIdentity {
            node_id: node_id.into(),
            incarnation: Arc::new(Mutex::new(new_incarnation())),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Returns the incarnation the node is registered (or registering) under.
    pub fn incarnation(&self) -> String {
        self.lock().clone()
    }

    /// Starts a new incarnation (after this node was fenced) and returns it.
    fn renew(&self) -> String {
        let mut incarnation = self.lock();
        *incarnation = new_incarnation();
        incarnation.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, String> {
        self.incarnation
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn new_incarnation() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[derive(Debug, Default, Clone, Copy)]
pub struct NodeMembershipActor;

/// What the membership actor is started with (cloned on every restart).
#[derive(Debug, Clone)]
pub struct NodeMembershipParams {
    pub store: Store,
    pub identity: NodeIdentity,
    /// The binary's version, shown to operators beside each node.
    pub version: String,
    /// Time between heartbeats (and sweeps for silent nodes).
    pub heartbeat: Duration,
    /// Silence after which a node is fenced and its jobs reclaimed.
    pub dead_after: Duration,
    /// This node's local-queue attempts, aborted when the node finds itself fenced.
    pub in_flight: InFlightJobs,
    pub liveness: Liveness,
}

#[derive(Debug)]
pub struct NodeMembershipState {
    params: NodeMembershipParams,
    registered: bool,
    /// Since when every heartbeat succeeded; `None` after a failed one.
    healthy_since_opt: Option<Instant>,
}

#[derive(Debug)]
pub enum NodeMembershipMsg {
    /// Writes the heartbeat, then looks for silent nodes (on a timer).
    Beat,
    /// Game-day fault (the `chaos` feature): panics, errors or hangs inside `handle`.
    #[cfg(feature = "chaos")]
    Chaos(crate::Fault),
}

impl DescribeMessage for NodeMembershipMsg {
    fn describe(&self) -> HandledMessage {
        match self {
            NodeMembershipMsg::Beat => HandledMessage::new(
                "NodeMembershipMsg::Beat",
                "write the heartbeat, fence silent nodes",
            ),
            #[cfg(feature = "chaos")]
            NodeMembershipMsg::Chaos(fault) => fault.describe(),
        }
    }
}

impl Actor for NodeMembershipActor {
    type Msg = NodeMembershipMsg;
    type State = NodeMembershipState;
    type Arguments = NodeMembershipParams;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        params: NodeMembershipParams,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(params.heartbeat, || NodeMembershipMsg::Beat);
        myself.send_message(NodeMembershipMsg::Beat)?;
        Ok(NodeMembershipState {
            params,
            registered: false,
            healthy_since_opt: None,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let liveness = state.params.liveness.clone();
        let _busy = liveness.busy_with(message.describe());
        match message {
            NodeMembershipMsg::Beat => {
                // A database that does not answer must not hold the beat (and the actor) for
                // longer than a node may stay silent.
                let bound = state.params.dead_after;
                if tokio::time::timeout(bound, beat(state)).await.is_err() {
                    if state.healthy_since_opt.take().is_some() {
                        warn!(
                            timeout_ms = bound.as_millis() as u64,
                            "this node's heartbeat did not finish in time, retrying every beat"
                        );
                    }
                    NodeHeartbeatFailed.emit();
                }
            }
            #[cfg(feature = "chaos")]
            NodeMembershipMsg::Chaos(fault) => fault.commit("node membership").await?,
        }
        Ok(())
    }
}

/// One beat: register or write the heartbeat, react to being fenced, then sweep.
async fn beat(state: &mut NodeMembershipState) {
    let params = &state.params;
    let node_id = params.identity.node_id();
    let beat_result = if state.registered {
        params
            .store
            .heartbeat_node(node_id, &params.identity.incarnation())
            .await
    } else {
        register(params, &params.identity.incarnation())
            .await
            .map(|()| Heartbeat::Alive)
    };
    match beat_result {
        Ok(Heartbeat::Alive) => {
            state.registered = true;
            state.healthy_since_opt.get_or_insert_with(Instant::now);
            follow_database_clock(params).await;
        }
        Ok(Heartbeat::Fenced { fenced_by_opt }) => {
            give_up_fenced_work(params, fenced_by_opt.as_deref()).await;
            let incarnation = params.identity.renew();
            state.registered = match register(params, &incarnation).await {
                Ok(()) => true,
                Err(error) => {
                    warn!(%error, "failed to register this node again, retrying every beat");
                    NodeHeartbeatFailed.emit();
                    false
                }
            };
            state.healthy_since_opt = state.registered.then(Instant::now);
            return;
        }
        Err(error) => {
            if state.healthy_since_opt.take().is_some() {
                warn!(%error, "failed to write this node's heartbeat, retrying every beat");
            } else if !state.registered {
                debug!(%error, "failed to register this node, retrying every beat");
            }
            NodeHeartbeatFailed.emit();
            return;
        }
    }
    let healthy_for = state
        .healthy_since_opt
        .map_or(Duration::ZERO, |since| since.elapsed());
    if healthy_for < params.dead_after {
        return;
    }
    let dead_after_ms = i64::try_from(params.dead_after.as_millis()).unwrap_or(i64::MAX);
    match params
        .store
        .fence_silent_nodes(node_id, dead_after_ms)
        .await
    {
        Ok(fenced) => {
            for node in fenced {
                NodesFenced {
                    node_id: &node.node_id,
                    silent_for_ms: node.silent_for_ms,
                    num_jobs_reclaimed: node.num_jobs_reclaimed,
                }
                .emit();
            }
        }
        Err(error) => warn!(%error, "failed to look for silent nodes"),
    }
}

/// Reads the database's clock and makes this node's follow it (see
/// [`bulwark_core::follow_shared_clock`]): leases and run times are compared across nodes, and
/// a node whose wall clock stepped ahead would otherwise take the running jobs of every other
/// node as expired. The reading is taken as made halfway through its round trip.
async fn follow_database_clock(params: &NodeMembershipParams) {
    let sent = Instant::now();
    let database_ms = match params.store.database_time_ms().await {
        Ok(database_ms) => database_ms,
        Err(error) => {
            debug!(%error, "failed to read the database's clock");
            return;
        }
    };
    let round_trip = sent.elapsed();
    let at = sent + round_trip / 2;
    let uncertainty_ms = i64::try_from((round_trip / 2).as_millis()).unwrap_or(i64::MAX);
    let step_ms = bulwark_core::follow_shared_clock(at, database_ms, uncertainty_ms);
    let wall_at_ms =
        bulwark_core::wall_clock_ms() - i64::try_from(at.elapsed().as_millis()).unwrap_or(0);
    ClockFollowed {
        offset_ms: database_ms - wall_at_ms,
        step_ms,
    }
    .emit();
}

async fn register(params: &NodeMembershipParams, incarnation: &str) -> Result<(), StoreError> {
    let registration = NodeRegistration {
        node_id: params.identity.node_id().to_owned(),
        incarnation: incarnation.to_owned(),
        version: params.version.clone(),
    };
    let registered = params.store.register_node(&registration).await?;
    info!(
        node_id = registration.node_id,
        incarnation,
        num_jobs_reclaimed = registered.num_jobs_reclaimed,
        "node registered"
    );
    Ok(())
}

/// This node was fenced: its leases may be someone else's already. Every local attempt stops
/// at once, and whatever the node still holds goes back to the queue, runnable now.
async fn give_up_fenced_work(params: &NodeMembershipParams, fenced_by_opt: Option<&str>) {
    let aborted = params.in_flight.abort_all();
    let num_released = params
        .store
        .release_jobs_of_owner(params.identity.node_id(), now_ms())
        .await
        .unwrap_or_else(|error| {
            error!(%error, "failed to release a fenced node's jobs, their leases will expire");
            0
        });
    NodeFencedSelf {
        fenced_by: fenced_by_opt.unwrap_or("unknown"),
        num_aborted: aborted.len(),
        num_released,
    }
    .emit();
}
