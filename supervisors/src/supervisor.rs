use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulwark_actors::Liveness;
use futures::future::BoxFuture;
use ractor::rpc::CallResult;
use ractor::{
    Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent,
};
use serde::Serialize;
use tracing::{error, info, warn};

use crate::metrics::{ChildExited, SupervisorEscalated};
use crate::panics::take_panic;

/// Words in the failure of a supervisor that gave up, by which its parent recognises it.
const ESCALATION_MARKER: &str = "exceeded its restart intensity";

/// Starts (or restarts) one child, linked to the supervisor cell it is given.
pub type StartFn =
    Arc<dyn Fn(ActorCell) -> BoxFuture<'static, Result<ActorCell, SpawnErr>> + Send + Sync>;

/// When a child that stopped is started again (Erlang/OTP's restart types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartType {
    /// Always restarted.
    Permanent,
    /// Restarted only after an abnormal exit (panic, error, kill).
    Transient,
    /// Never restarted.
    Temporary,
}

/// How a child stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitKind {
    Normal,
    Panic,
    Error,
    /// Killed by the supervisor after it stayed busy past the hang timeout.
    Hang,
    /// Killed from outside.
    Killed,
}

impl ExitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExitKind::Normal => "normal",
            ExitKind::Panic => "panic",
            ExitKind::Error => "error",
            ExitKind::Hang => "hang",
            ExitKind::Killed => "killed",
        }
    }
}

/// One child of a supervisor.
#[derive(Clone)]
pub struct ChildSpec {
    pub name: String,
    pub restart: RestartType,
    pub start: StartFn,
    /// Set for children whose hangs the supervisor should detect.
    pub liveness: Option<Liveness>,
    /// True when the child is itself a [`SupervisorActor`], so observation recurses into it.
    pub is_supervisor: bool,
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("restart", &self.restart)
            .field("is_supervisor", &self.is_supervisor)
            .finish_non_exhaustive()
    }
}

/// At most `max_restarts` restarts within `within`; one more and the supervisor fails, so its
/// parent decides (escalation).
#[derive(Debug, Clone, Copy)]
pub struct RestartIntensity {
    pub max_restarts: u32,
    pub within: Duration,
}

/// What a supervisor is started with.
#[derive(Debug, Clone)]
pub struct SupervisorParams {
    pub name: String,
    /// Started in order; a child's dependencies come before it.
    pub children: Vec<ChildSpec>,
    pub intensity: RestartIntensity,
    /// Delay before a restart: `backoff_base * 2^(recent restarts - 1)`, capped.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub hang_timeout: Duration,
    pub heartbeat: Duration,
}

/// Restarts failed children one for one, with bounded intensity, backoff and hang detection.
#[derive(Debug, Default, Clone, Copy)]
pub struct SupervisorActor;

#[derive(Debug)]
pub struct SupervisorState {
    params: SupervisorParams,
    children: Vec<ChildState>,
    recent_restarts: VecDeque<Instant>,
    counters: Counters,
}

#[derive(Debug)]
struct ChildState {
    spec: ChildSpec,
    cell_opt: Option<ActorCell>,
    killed_for_hang: bool,
    counters: Counters,
    last_exit: Option<LastExit>,
}

/// Restart, panic, error, hang, kill and escalation counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub restarts: u64,
    pub panics: u64,
    pub errors: u64,
    pub hangs: u64,
    pub kills: u64,
    pub escalations: u64,
}

impl Counters {
    fn count_exit(&mut self, kind: ExitKind) {
        match kind {
            ExitKind::Normal => {}
            ExitKind::Panic => self.panics += 1,
            ExitKind::Error => self.errors += 1,
            ExitKind::Hang => self.hangs += 1,
            ExitKind::Killed => self.kills += 1,
        }
    }
}

/// The last time a child stopped, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastExit {
    pub kind: ExitKind,
    pub message: String,
}

/// A supervisor's view of itself and its children, for operators and tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SupervisorSnapshot {
    pub name: String,
    pub strategy: &'static str,
    pub counters: Counters,
    pub children: Vec<ChildSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChildSnapshot {
    pub name: String,
    pub running: bool,
    pub restart: RestartType,
    pub counters: Counters,
    pub last_exit: Option<LastExit>,
    /// The child's own tree when it is a supervisor.
    pub supervisor: Option<Box<SupervisorSnapshot>>,
}

#[derive(Debug)]
pub enum SupervisorMsg {
    /// Replies with counters and children, recursing into child supervisors.
    Observe(RpcReplyPort<SupervisorSnapshot>),
    /// Starts the child at this index again (sent after the backoff delay).
    RestartChild(usize),
    /// Checks children for hangs.
    Heartbeat,
}

impl Actor for SupervisorActor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorParams;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        params: SupervisorParams,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut children = Vec::with_capacity(params.children.len());
        for spec in &params.children {
            let cell = (spec.start)(myself.get_cell()).await?;
            children.push(ChildState {
                spec: spec.clone(),
                cell_opt: Some(cell),
                killed_for_hang: false,
                counters: Counters::default(),
                last_exit: None,
            });
        }
        myself.send_interval(params.heartbeat, || SupervisorMsg::Heartbeat);
        info!(
            supervisor = params.name,
            num_children = children.len(),
            "supervisor started"
        );
        Ok(SupervisorState {
            params,
            children,
            recent_restarts: VecDeque::new(),
            counters: Counters::default(),
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Children stop before their supervisor is gone, so none outlives the tree.
        myself
            .stop_children_and_wait(
                Some("supervisor stopping".to_owned()),
                Some(Duration::from_secs(10)),
            )
            .await;
        info!(supervisor = state.params.name, "supervisor stopped");
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Observe(reply) => {
                let _ = reply.send(observe(state).await);
            }
            SupervisorMsg::RestartChild(index) => restart_child(&myself, state, index).await?,
            SupervisorMsg::Heartbeat => detect_hangs(state),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, kind, message) = match event {
            SupervisionEvent::ActorFailed(cell, failure) => {
                let message = failure.to_string();
                let kind = if take_panic(&message).is_some() {
                    ExitKind::Panic
                } else {
                    ExitKind::Error
                };
                (cell, kind, message)
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let message = reason.unwrap_or_else(|| "stopped".to_owned());
                (cell, ExitKind::Normal, message)
            }
            _ => return Ok(()),
        };
        let Some(index) = state.children.iter().position(|child| {
            child
                .cell_opt
                .as_ref()
                .is_some_and(|child_cell| child_cell.get_id() == cell.get_id())
        }) else {
            return Ok(());
        };
        let child = &mut state.children[index];
        let kind = match kind {
            ExitKind::Normal if child.killed_for_hang => ExitKind::Hang,
            ExitKind::Normal if message == "killed" => ExitKind::Killed,
            other => other,
        };
        child.cell_opt = None;
        child.killed_for_hang = false;
        child.counters.count_exit(kind);
        // A child supervisor that gave up reports it in its failure; the escalation is counted
        // here, in the parent, since the child's own counters die with it.
        if child.spec.is_supervisor
            && kind == ExitKind::Error
            && message.contains(ESCALATION_MARKER)
        {
            child.counters.escalations += 1;
            state.counters.escalations += 1;
        }
        child.last_exit = Some(LastExit {
            kind,
            message: message.clone(),
        });
        state.counters.count_exit(kind);
        ChildExited {
            supervisor: &state.params.name,
            child: &child.spec.name,
            kind,
            message: &message,
        }
        .emit();
        let restart = match child.spec.restart {
            RestartType::Permanent => true,
            RestartType::Transient => kind != ExitKind::Normal,
            RestartType::Temporary => false,
        };
        if restart {
            schedule_restart(&myself, state, index)?;
        }
        Ok(())
    }
}

/// Counts a restart against the intensity window and schedules it after the backoff delay,
/// or fails the supervisor when the window is full.
fn schedule_restart(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    index: usize,
) -> Result<(), ActorProcessingErr> {
    let now = Instant::now();
    let window = state.params.intensity.within;
    while state
        .recent_restarts
        .front()
        .is_some_and(|at| now.duration_since(*at) > window)
    {
        state.recent_restarts.pop_front();
    }
    state.recent_restarts.push_back(now);
    let num_recent = state.recent_restarts.len() as u32;
    if num_recent > state.params.intensity.max_restarts {
        SupervisorEscalated {
            supervisor: &state.params.name,
            num_restarts: num_recent,
            within: window,
        }
        .emit();
        return Err(format!(
            "supervisor {} {ESCALATION_MARKER}: {num_recent} restarts in {window:?}",
            state.params.name
        )
        .into());
    }
    let exponent = num_recent.saturating_sub(1).min(16);
    let delay = state
        .params
        .backoff_base
        .saturating_mul(1 << exponent)
        .min(state.params.backoff_max);
    myself.send_after(delay, move || SupervisorMsg::RestartChild(index));
    Ok(())
}

async fn restart_child(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    index: usize,
) -> Result<(), ActorProcessingErr> {
    let Some(child) = state.children.get_mut(index) else {
        return Ok(());
    };
    if child.cell_opt.is_some() {
        return Ok(());
    }
    match (child.spec.start)(myself.get_cell()).await {
        Ok(cell) => {
            child.cell_opt = Some(cell);
            child.counters.restarts += 1;
            state.counters.restarts += 1;
            crate::metrics::ChildRestarted {
                supervisor: &state.params.name,
                child: &child.spec.name,
            }
            .emit();
            Ok(())
        }
        Err(spawn_error) => {
            let message = spawn_error.to_string();
            error!(supervisor = state.params.name, child = child.spec.name, %message, "failed to restart child");
            child.counters.errors += 1;
            child.last_exit = Some(LastExit {
                kind: ExitKind::Error,
                message,
            });
            state.counters.errors += 1;
            schedule_restart(myself, state, index)
        }
    }
}

fn detect_hangs(state: &mut SupervisorState) {
    let hang_timeout = state.params.hang_timeout;
    for child in &mut state.children {
        let (Some(cell), Some(liveness)) = (&child.cell_opt, &child.spec.liveness) else {
            continue;
        };
        let Some(busy_for) = liveness.busy_for() else {
            continue;
        };
        if busy_for > hang_timeout && !child.killed_for_hang {
            warn!(
                supervisor = state.params.name,
                child = child.spec.name,
                busy_ms = busy_for.as_millis() as u64,
                "child is hung, killing it"
            );
            child.killed_for_hang = true;
            liveness.reset();
            cell.kill();
        }
    }
}

async fn observe(state: &SupervisorState) -> SupervisorSnapshot {
    let mut children = Vec::with_capacity(state.children.len());
    for child in &state.children {
        let supervisor = match (&child.cell_opt, child.spec.is_supervisor) {
            (Some(cell), true) => observe_child_supervisor(cell).await.map(Box::new),
            _ => None,
        };
        children.push(ChildSnapshot {
            name: child.spec.name.clone(),
            running: child.cell_opt.is_some(),
            restart: child.spec.restart,
            counters: child.counters,
            last_exit: child.last_exit.clone(),
            supervisor,
        });
    }
    SupervisorSnapshot {
        name: state.params.name.clone(),
        strategy: "one_for_one",
        counters: state.counters,
        children,
    }
}

async fn observe_child_supervisor(cell: &ActorCell) -> Option<SupervisorSnapshot> {
    let supervisor: ActorRef<SupervisorMsg> = cell.clone().into();
    match supervisor
        .call(SupervisorMsg::Observe, Some(Duration::from_secs(1)))
        .await
    {
        Ok(CallResult::Success(snapshot)) => Some(snapshot),
        _ => None,
    }
}

/// Asks a supervisor for its snapshot; `None` if it is not running or does not answer in time.
pub async fn observe_supervisor(
    supervisor: &ActorRef<SupervisorMsg>,
) -> Option<SupervisorSnapshot> {
    observe_child_supervisor(&supervisor.get_cell()).await
}
