use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulwark_core::{HandledMessage, Liveness};
use futures::FutureExt;
use futures::future::BoxFuture;
use ractor::rpc::CallResult;
use ractor::{
    Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent,
};
use serde::Serialize;
use tracing::{error, info, warn};

use crate::incident::{IncidentKind, IncidentReport, IncidentSink, SupervisorInfo};
use crate::metrics::{ChildExited, SupervisorEscalated, SupervisorStarted};
use crate::panics::take_panic_within;

/// Words in the failure of a supervisor that gave up, by which its parent recognises it.
const ESCALATION_MARKER: &str = "exceeded its restart intensity";
/// How long a sibling stopped by `one_for_all` or `rest_for_one` may take before it is killed.
const SIBLING_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an operator's stop waits for a child before killing it (after its drain).
const OPERATOR_STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Starts (or restarts) one child, linked to the supervisor cell it is given.
pub type StartFn =
    Arc<dyn Fn(ActorCell) -> BoxFuture<'static, Result<ActorCell, SpawnErr>> + Send + Sync>;

/// Lets a child finish or hand back its in-flight work before an operator stops it.
pub type DrainFn = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// Which children a supervisor restarts when one fails (Erlang/OTP's strategies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SupervisionStrategy {
    /// Only the failed child: siblings are independent.
    #[default]
    OneForOne,
    /// Every child: siblings share state that the failure may have broken.
    OneForAll,
    /// The failed child and the children started after it, which depend on it.
    RestForOne,
}

impl SupervisionStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            SupervisionStrategy::OneForOne => "one_for_one",
            SupervisionStrategy::OneForAll => "one_for_all",
            SupervisionStrategy::RestForOne => "rest_for_one",
        }
    }

    /// Returns the indices restarted when child `failed` of `num_children` fails, in start order.
    pub fn restart_group(self, failed: usize, num_children: usize) -> Vec<usize> {
        match self {
            SupervisionStrategy::OneForOne => vec![failed],
            SupervisionStrategy::OneForAll => (0..num_children).collect(),
            SupervisionStrategy::RestForOne => (failed..num_children).collect(),
        }
    }
}

impl FromStr for SupervisionStrategy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "one_for_one" => Ok(SupervisionStrategy::OneForOne),
            "one_for_all" => Ok(SupervisionStrategy::OneForAll),
            "rest_for_one" => Ok(SupervisionStrategy::RestForOne),
            other => Err(format!(
                "unknown supervision strategy `{other}` (one_for_one, one_for_all, rest_for_one)"
            )),
        }
    }
}

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

    fn incident_kind(self) -> Option<IncidentKind> {
        match self {
            ExitKind::Normal => None,
            ExitKind::Panic => Some(IncidentKind::Panic),
            ExitKind::Error | ExitKind::Killed => Some(IncidentKind::Error),
            ExitKind::Hang => Some(IncidentKind::Hang),
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
    /// Called before an operator stops or restarts the child (the job runner finishes or
    /// releases its jobs); child supervisors drain their own children instead.
    pub drain: Option<DrainFn>,
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
    pub strategy: SupervisionStrategy,
    pub intensity: RestartIntensity,
    /// Delay before a restart: `backoff_base * 2^(recent restarts - 1)`, capped.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub hang_timeout: Duration,
    pub heartbeat: Duration,
}

/// Restarts failed children per its strategy, with bounded intensity, backoff and hang
/// detection, and writes an incident for every failure.
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
    /// The message the child was busy on when it was killed for hanging.
    hung_on: Option<HandledMessage>,
    /// Stopped by an operator: not restarted until an operator starts it.
    stopped_by_operator: bool,
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

/// Whether a child runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildStatus {
    Running,
    /// Down, waiting for its restart (or not restarted per its restart type).
    Down,
    /// Stopped by an operator.
    Stopped,
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
    pub status: ChildStatus,
    pub restart: RestartType,
    pub counters: Counters,
    pub last_exit: Option<LastExit>,
    /// The child's own tree when it is a supervisor.
    pub supervisor: Option<Box<SupervisorSnapshot>>,
}

/// What an operator asks of a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlAction {
    /// Drain, stop; the child stays down until started.
    Stop,
    /// Start a stopped child.
    Start,
    /// Drain, stop, start.
    Restart,
}

impl ControlAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ControlAction::Stop => "stop",
            ControlAction::Start => "start",
            ControlAction::Restart => "restart",
        }
    }
}

/// Why an operator's action was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("no child named `{0}`")]
    NotFound(String),
    #[error("`{0}` is not a supervisor, it has no children")]
    NotASupervisor(String),
    #[error("`{0}` is not running")]
    NotRunning(String),
    #[error("failed to start `{0}`: {1}")]
    StartFailed(String, String),
}

#[derive(Debug)]
pub enum SupervisorMsg {
    /// Replies with counters and children, recursing into child supervisors.
    Observe(RpcReplyPort<SupervisorSnapshot>),
    /// Starts the children at these indices again, in order (sent after the backoff delay).
    RestartChildren(Vec<usize>),
    /// Checks children for hangs.
    Heartbeat,
    /// Applies an operator's action to the child at `path` (names below this supervisor).
    Control {
        path: Vec<String>,
        action: ControlAction,
        reply: RpcReplyPort<Result<(), ControlError>>,
    },
    /// Drains every child, last started first; replies when done.
    Drain(RpcReplyPort<()>),
    /// The drain an operator's stop or restart of the child named `child` began has ended
    /// (it runs outside the handler, so this supervisor keeps supervising meanwhile): stop it,
    /// start it again for a restart, and reply.
    Drained {
        child: String,
        action: ControlAction,
        reply: RpcReplyPort<Result<(), ControlError>>,
    },
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
                hung_on: None,
                stopped_by_operator: false,
                counters: Counters::default(),
                last_exit: None,
            });
        }
        myself.send_interval(params.heartbeat, || SupervisorMsg::Heartbeat);
        SupervisorStarted {
            supervisor: &params.name,
        }
        .emit();
        info!(
            supervisor = params.name,
            strategy = params.strategy.as_str(),
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
        // Children stop before their supervisor is gone, last started first, so none outlives
        // the tree and nothing outlives what it depends on.
        for child in state.children.iter_mut().rev() {
            if let Some(cell) = child.cell_opt.take() {
                stop_or_kill(&cell, "supervisor stopping", SIBLING_STOP_TIMEOUT).await;
            }
        }
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
            SupervisorMsg::RestartChildren(indices) => {
                for index in indices {
                    restart_child(&myself, state, index).await?;
                }
            }
            SupervisorMsg::Heartbeat => detect_hangs(state),
            SupervisorMsg::Control {
                path,
                action,
                reply,
            } => control(&myself, state, path, action, reply).await,
            SupervisorMsg::Drained {
                child,
                action,
                reply,
            } => {
                let outcome = finish_control(&myself, state, &child, action).await;
                let _ = reply.send(outcome);
            }
            SupervisorMsg::Drain(reply) => {
                drain_children(state).await;
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, kind, message, backtrace) = match event {
            SupervisionEvent::ActorFailed(cell, failure) => {
                let message = failure.to_string();
                match take_panic_within(&message) {
                    Some(record) => (cell, ExitKind::Panic, message, Some(record.backtrace)),
                    None => (cell, ExitKind::Error, message, None),
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let message = reason.unwrap_or_else(|| "stopped".to_owned());
                (cell, ExitKind::Normal, message, None)
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
        let hung_on = child.hung_on.take();
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
            child: &state.children[index].spec.name,
            kind,
            message: &message,
        }
        .emit();
        if let Some(incident_kind) = kind.incident_kind() {
            let handled = hung_on.or_else(|| {
                state.children[index]
                    .spec
                    .liveness
                    .as_ref()
                    .and_then(Liveness::last_message)
            });
            report_incident(
                &myself,
                state,
                index,
                IncidentFacts {
                    kind: incident_kind,
                    message,
                    backtrace,
                    handled,
                },
            );
        }
        let child = &state.children[index];
        let restart = match child.spec.restart {
            RestartType::Permanent => true,
            RestartType::Transient => kind != ExitKind::Normal,
            RestartType::Temporary => false,
        };
        if restart && !child.stopped_by_operator {
            let group = stop_restart_group(state, index).await;
            schedule_restart(&myself, state, group)?;
        }
        Ok(())
    }
}

/// What a supervisor knows of one failure.
struct IncidentFacts {
    kind: IncidentKind,
    message: String,
    backtrace: Option<String>,
    handled: Option<HandledMessage>,
}

fn report_incident(
    myself: &ActorRef<SupervisorMsg>,
    state: &SupervisorState,
    index: usize,
    facts: IncidentFacts,
) {
    let cell = myself.get_cell();
    let Some(sink) = instance_of(&cell).and_then(|instance| IncidentSink::for_instance(&instance))
    else {
        return;
    };
    let child = &state.children[index];
    // Failures below root belong to the subsystem they happen in; root's children are the
    // subsystems themselves.
    let subsystem = if state.params.name == "root" {
        child.spec.name.clone()
    } else {
        state.params.name.clone()
    };
    sink.report(IncidentReport {
        kind: facts.kind,
        subsystem,
        actor_path: format!("{}/{}", supervisor_path(&cell), child.spec.name),
        supervisor: Some(SupervisorInfo {
            name: state.params.name.clone(),
            strategy: state.params.strategy.as_str().to_owned(),
            restart_count: child.counters.restarts,
        }),
        message: facts.message,
        backtrace: facts.backtrace,
        handled: facts.handled,
        request_id: None,
        trace_id: None,
    });
}

/// Returns the instance prefix of a registered name (`<instance>/<name>`).
fn instance_of(cell: &ActorCell) -> Option<String> {
    let name = cell.get_name()?;
    name.split_once('/')
        .map(|(instance, _)| instance.to_owned())
}

/// Returns the supervisor's path from the root of its tree, e.g. `root/sentiment`.
fn supervisor_path(cell: &ActorCell) -> String {
    let mut names = Vec::new();
    let mut current = Some(cell.clone());
    while let Some(actor) = current {
        let name = actor.get_name().unwrap_or_default();
        names.push(
            name.split_once('/')
                .map_or(name.clone(), |(_, rest)| rest.to_owned()),
        );
        current = actor.try_get_supervisor();
    }
    names.reverse();
    names.join("/")
}

/// Stops the running siblings the strategy restarts with child `failed` (last started
/// first), and returns the indices to restart, in start order. Temporary siblings are stopped
/// but not restarted; siblings an operator stopped stay down.
async fn stop_restart_group(state: &mut SupervisorState, failed: usize) -> Vec<usize> {
    let group = state
        .params
        .strategy
        .restart_group(failed, state.children.len());
    for &index in group.iter().rev() {
        if index == failed {
            continue;
        }
        let child = &mut state.children[index];
        if let Some(cell) = child.cell_opt.take() {
            info!(
                supervisor = state.params.name,
                child = child.spec.name,
                strategy = state.params.strategy.as_str(),
                "stopping sibling of a failed child for restart"
            );
            stop_or_kill(
                &cell,
                "restarting with a failed sibling",
                SIBLING_STOP_TIMEOUT,
            )
            .await;
        }
    }
    group
        .into_iter()
        .filter(|&index| {
            let child = &state.children[index];
            index == failed
                || (child.spec.restart != RestartType::Temporary && !child.stopped_by_operator)
        })
        .collect()
}

/// Stops a child, killing it if it does not stop in time (a hung child never reads `stop`).
async fn stop_or_kill(cell: &ActorCell, reason: &str, timeout: Duration) {
    if cell
        .stop_and_wait(Some(reason.to_owned()), Some(timeout))
        .await
        .is_err()
    {
        let _ = cell.kill_and_wait(Some(timeout)).await;
    }
}

/// Counts a restart against the intensity window and schedules it after the backoff delay,
/// or fails the supervisor when the window is full.
fn schedule_restart(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    indices: Vec<usize>,
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
    myself.send_after(delay, move || SupervisorMsg::RestartChildren(indices));
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
    if child.cell_opt.is_some() || child.stopped_by_operator {
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
            schedule_restart(myself, state, vec![index])
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
            let hung_on = liveness.last_message();
            warn!(
                supervisor = state.params.name,
                child = child.spec.name,
                busy_ms = busy_for.as_millis() as u64,
                message_type = hung_on
                    .as_ref()
                    .map_or("unknown", |message| message.message_type.as_str()),
                "child is hung, killing it"
            );
            child.killed_for_hang = true;
            child.hung_on = hung_on;
            liveness.reset();
            cell.kill();
        }
    }
}

/// Applies an operator's action to the child at `path`, replying on `reply`. Deeper paths are
/// forwarded to the child supervisor with the reply port, so this supervisor does not wait for
/// them; a stop or restart of its own child drains the child in a task first, and finishes in
/// [`SupervisorMsg::Drained`]. Either way this supervisor keeps handling failures meanwhile.
async fn control(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    path: Vec<String>,
    action: ControlAction,
    reply: RpcReplyPort<Result<(), ControlError>>,
) {
    let Some((first, rest)) = path.split_first() else {
        let _ = reply.send(Err(ControlError::NotFound(String::new())));
        return;
    };
    let Some(index) = state
        .children
        .iter()
        .position(|child| &child.spec.name == first)
    else {
        let _ = reply.send(Err(ControlError::NotFound(first.clone())));
        return;
    };
    let child = &state.children[index];
    if !rest.is_empty() {
        if !child.spec.is_supervisor {
            let _ = reply.send(Err(ControlError::NotASupervisor(first.clone())));
            return;
        }
        let Some(cell) = &child.cell_opt else {
            let _ = reply.send(Err(ControlError::NotRunning(first.clone())));
            return;
        };
        let supervisor: ActorRef<SupervisorMsg> = cell.clone().into();
        let forwarded = supervisor.send_message(SupervisorMsg::Control {
            path: rest.to_vec(),
            action,
            reply,
        });
        if let Err(ractor::MessagingErr::SendErr(SupervisorMsg::Control { reply, .. })) = forwarded
        {
            let _ = reply.send(Err(ControlError::NotRunning(first.clone())));
        }
        return;
    }
    if action == ControlAction::Start {
        let _ = reply.send(start_child(myself, state, index).await);
        return;
    }
    if child.cell_opt.is_none() {
        let _ = reply.send(Err(ControlError::NotRunning(first.clone())));
        return;
    }
    let drain = drain_future(child);
    let supervisor = myself.clone();
    let name = first.clone();
    tokio::spawn(async move {
        drain.await;
        let drained = supervisor.send_message(SupervisorMsg::Drained {
            child: name.clone(),
            action,
            reply,
        });
        if let Err(ractor::MessagingErr::SendErr(SupervisorMsg::Drained { reply, .. })) = drained {
            let _ = reply.send(Err(ControlError::NotRunning(name)));
        }
    });
}

/// Stops (and for a restart starts again) a child whose drain has ended.
async fn finish_control(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    name: &str,
    action: ControlAction,
) -> Result<(), ControlError> {
    let Some(index) = state
        .children
        .iter()
        .position(|child| child.spec.name == name)
    else {
        return Err(ControlError::NotFound(name.to_owned()));
    };
    match action {
        ControlAction::Stop => stop_child(state, index).await,
        ControlAction::Start => start_child(myself, state, index).await,
        ControlAction::Restart => {
            stop_child(state, index).await?;
            start_child(myself, state, index).await
        }
    }
}

/// Stops a drained child; it stays down until started.
async fn stop_child(state: &mut SupervisorState, index: usize) -> Result<(), ControlError> {
    let child = &mut state.children[index];
    let Some(cell) = child.cell_opt.clone() else {
        return Err(ControlError::NotRunning(child.spec.name.clone()));
    };
    child.stopped_by_operator = true;
    child.cell_opt = None;
    stop_or_kill(&cell, "stopped by an operator", OPERATOR_STOP_TIMEOUT).await;
    info!(
        supervisor = state.params.name,
        child = child.spec.name,
        "child stopped by an operator"
    );
    Ok(())
}

async fn start_child(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    index: usize,
) -> Result<(), ControlError> {
    let child = &mut state.children[index];
    child.stopped_by_operator = false;
    if child.cell_opt.is_some() {
        return Ok(());
    }
    match (child.spec.start)(myself.get_cell()).await {
        Ok(cell) => {
            child.cell_opt = Some(cell);
            info!(
                supervisor = state.params.name,
                child = child.spec.name,
                "child started by an operator"
            );
            Ok(())
        }
        Err(spawn_error) => Err(ControlError::StartFailed(
            child.spec.name.clone(),
            spawn_error.to_string(),
        )),
    }
}

/// Returns the drain of a child (its in-flight work finishes or goes back to its transport),
/// owning what it needs, so it can run outside the supervisor's handler.
fn drain_future(child: &ChildState) -> BoxFuture<'static, ()> {
    let drain = child.spec.drain.clone();
    let supervisor: Option<ActorRef<SupervisorMsg>> = child
        .cell_opt
        .clone()
        .filter(|_| child.spec.is_supervisor)
        .map(Into::into);
    async move {
        if let Some(drain) = drain {
            drain().await;
        }
        if let Some(supervisor) = supervisor {
            let _ = supervisor
                .call(SupervisorMsg::Drain, Some(OPERATOR_STOP_TIMEOUT * 4))
                .await;
        }
    }
    .boxed()
}

async fn drain_child(child: &ChildState) {
    drain_future(child).await;
}

async fn drain_children(state: &SupervisorState) {
    for child in state.children.iter().rev() {
        if child.cell_opt.is_some() {
            drain_child(child).await;
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
        let status = match (&child.cell_opt, child.stopped_by_operator) {
            (Some(_), _) => ChildStatus::Running,
            (None, true) => ChildStatus::Stopped,
            (None, false) => ChildStatus::Down,
        };
        children.push(ChildSnapshot {
            name: child.spec.name.clone(),
            running: child.cell_opt.is_some(),
            status,
            restart: child.spec.restart,
            counters: child.counters,
            last_exit: child.last_exit.clone(),
            supervisor,
        });
    }
    SupervisorSnapshot {
        name: state.params.name.clone(),
        strategy: state.params.strategy.as_str(),
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

/// Asks a supervisor to apply an operator's action to the child at `path` (child names below
/// it, e.g. `["jobs"]` or `["sentiment", "sentiment-worker-0"]`).
pub async fn control_supervisor(
    supervisor: &ActorRef<SupervisorMsg>,
    path: Vec<String>,
    action: ControlAction,
) -> Result<(), ControlError> {
    match supervisor
        .call(
            |reply| SupervisorMsg::Control {
                path,
                action,
                reply,
            },
            Some(OPERATOR_STOP_TIMEOUT * 5),
        )
        .await
    {
        Ok(CallResult::Success(outcome)) => outcome,
        _ => Err(ControlError::NotRunning("root".to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves each strategy restarts the documented group of children, in start order.
    #[test]
    fn restart_groups_follow_the_strategy() {
        assert_eq!(SupervisionStrategy::OneForOne.restart_group(1, 4), vec![1]);
        assert_eq!(
            SupervisionStrategy::OneForAll.restart_group(1, 4),
            vec![0, 1, 2, 3]
        );
        assert_eq!(
            SupervisionStrategy::RestForOne.restart_group(1, 4),
            vec![1, 2, 3]
        );
        assert_eq!(SupervisionStrategy::RestForOne.restart_group(3, 4), vec![3]);
    }

    /// Proves strategies parse from their configuration names and print back the same.
    #[test]
    fn strategies_round_trip_through_their_names() {
        for strategy in [
            SupervisionStrategy::OneForOne,
            SupervisionStrategy::OneForAll,
            SupervisionStrategy::RestForOne,
        ] {
            assert_eq!(
                strategy.as_str().parse::<SupervisionStrategy>(),
                Ok(strategy)
            );
        }
        assert!("all_for_one".parse::<SupervisionStrategy>().is_err());
    }
}
