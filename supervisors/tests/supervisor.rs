//! The [`SupervisorActor`] (one_for_one, one_for_all, rest_for_one) against small test children that panic, fail, hang or
//! stop on request: counting, restart types, restart intensity and escalation, backoff, hang
//! detection, crash isolation and recursive observation.
//!
//! Tests share one process and so one ractor registry: every registered name starts with the
//! test's own name. Timings are short (heartbeat 20 ms, hang timeout 200 ms, backoff 5 ms) and
//! every wait is a poll with a deadline; time bounds are asserted from below only. Tests that
//! watch for a restart that must not happen run on paused tokio time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bulwark_core::Liveness;
use bulwark_supervisors::{
    ChildSnapshot, ChildSpec, ChildStatus, ControlAction, ControlError, Counters, ExitKind,
    RestartIntensity, RestartType, SupervisionStrategy, SupervisorActor, SupervisorMsg,
    SupervisorParams, SupervisorSnapshot, actor_spec, control_supervisor, install_panic_hook,
    observe_supervisor,
};
use bulwark_test_support::{POLL_INTERVAL, Probe, eventually, wait_for_child};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort};

const HEARTBEAT: Duration = Duration::from_millis(20);
const HANG_TIMEOUT: Duration = Duration::from_millis(200);
const BACKOFF_BASE: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_millis(100);
/// How long any awaited condition may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(5);
const CALL_TIMEOUT_MS: u64 = 1_000;
/// How long a child that must stay down is watched: many times the backoff it would get. The
/// tests that watch run on paused tokio time, so the window costs no wall-clock time.
const STAYS_DOWN_WINDOW: Duration = Duration::from_millis(150);

/// When every incarnation of one test child started, and when it was asked to misbehave
/// (panic, fail, hang or stop). Shared by all incarnations and the test.
#[derive(Debug, Clone, Default)]
struct ChildTimeline {
    started_at: Probe<Instant>,
    misbehaved_at: Probe<Instant>,
}

/// A child that answers pings and panics, fails, hangs or stops when told to.
#[derive(Debug, Clone, Copy)]
struct TestChildActor;

#[derive(Debug, Clone)]
struct TestChildParams {
    liveness_opt: Option<Liveness>,
    timeline: ChildTimeline,
}

#[derive(Debug)]
struct TestChildState {
    params: TestChildParams,
    /// Pings answered by this incarnation; a restart starts again from zero.
    num_pings: u32,
}

#[derive(Debug)]
enum TestChildMsg {
    /// Replies with the number of pings this incarnation has answered, this one included.
    Ping(RpcReplyPort<u32>),
    Panic,
    Fail,
    /// Stays busy on this message forever.
    Hang,
    /// Stops normally.
    Stop,
}

impl TestChildParams {
    fn record_misbehaviour(&self) {
        self.timeline.misbehaved_at.record(Instant::now());
    }
}

impl Actor for TestChildActor {
    type Msg = TestChildMsg;
    type State = TestChildState;
    type Arguments = TestChildParams;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        params: TestChildParams,
    ) -> Result<Self::State, ActorProcessingErr> {
        params.timeline.started_at.record(Instant::now());
        Ok(TestChildState {
            params,
            num_pings: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Busy for the whole message, like a real worker, so a hang is visible to the supervisor.
        let liveness_opt = state.params.liveness_opt.clone();
        let _busy_opt = liveness_opt.as_ref().map(Liveness::busy);
        let name = myself.get_name().unwrap_or_default();
        match message {
            TestChildMsg::Ping(reply) => {
                state.num_pings += 1;
                let _ = reply.send(state.num_pings);
            }
            TestChildMsg::Panic => {
                state.params.record_misbehaviour();
                panic!("test child {name} panicked on request");
            }
            TestChildMsg::Fail => {
                state.params.record_misbehaviour();
                return Err(format!("test child {name} failed on request").into());
            }
            TestChildMsg::Hang => {
                state.params.record_misbehaviour();
                futures::future::pending::<()>().await;
            }
            TestChildMsg::Stop => {
                state.params.record_misbehaviour();
                myself.stop(None);
            }
        }
        Ok(())
    }
}

/// The test's handle on one supervised test child, looked up by registered name every time
/// since restarts replace the actor.
#[derive(Debug)]
struct TestChild {
    registered_name: String,
    timeline: ChildTimeline,
}

impl TestChild {
    /// Returns a child registered as `{test}/{child}`; its snapshot name is `child`.
    fn new(test: &str, child: &str) -> TestChild {
        TestChild {
            registered_name: format!("{test}/{child}"),
            timeline: ChildTimeline::default(),
        }
    }

    fn spec(&self, restart: RestartType, liveness_opt: Option<Liveness>) -> ChildSpec {
        let params = TestChildParams {
            liveness_opt: liveness_opt.clone(),
            timeline: self.timeline.clone(),
        };
        let mut spec = actor_spec(&self.registered_name, TestChildActor, params, liveness_opt);
        spec.restart = restart;
        spec
    }

    fn actor_opt(&self) -> Option<ActorRef<TestChildMsg>> {
        ractor::registry::where_is(&self.registered_name).map(ActorRef::from)
    }

    fn actor(&self) -> ActorRef<TestChildMsg> {
        self.actor_opt()
            .unwrap_or_else(|| panic!("{} is registered", self.registered_name))
    }

    /// Sends a message to the current incarnation.
    fn send(&self, message: TestChildMsg) {
        self.actor()
            .cast(message)
            .expect("test child accepts the message");
    }

    async fn ping(&self) -> u32 {
        ractor::call_t!(self.actor(), TestChildMsg::Ping, CALL_TIMEOUT_MS)
            .expect("test child answers a ping")
    }

    /// Waits for an incarnation other than `old_id` to be registered and returns it.
    async fn wait_for_new_incarnation(&self, old_id: ActorId) -> ActorRef<TestChildMsg> {
        eventually(DEADLINE, || async {
            self.actor_opt().filter(|actor| actor.get_id() != old_id)
        })
        .await
    }

    fn num_starts(&self) -> usize {
        self.timeline.started_at.len()
    }

    fn started_at(&self, incarnation: usize) -> Instant {
        self.timeline.started_at.records()[incarnation]
    }

    fn misbehaved_at(&self, occurrence: usize) -> Instant {
        self.timeline.misbehaved_at.records()[occurrence]
    }
}

/// Returns params with the short test timings and a lenient restart intensity.
fn supervisor_params(name: &str, children: Vec<ChildSpec>) -> SupervisorParams {
    SupervisorParams {
        name: name.to_owned(),
        children,
        strategy: SupervisionStrategy::OneForOne,
        intensity: RestartIntensity {
            max_restarts: 10,
            within: Duration::from_secs(10),
        },
        backoff_base: BACKOFF_BASE,
        backoff_max: BACKOFF_MAX,
        hang_timeout: HANG_TIMEOUT,
        heartbeat: HEARTBEAT,
    }
}

/// Returns a permanent child spec that runs a [`SupervisorActor`] registered as
/// `{test}/{params.name}`.
fn supervisor_child_spec(test: &str, params: SupervisorParams) -> ChildSpec {
    let registered_name = format!("{test}/{}", params.name);
    let mut spec = actor_spec(&registered_name, SupervisorActor, params, None);
    spec.is_supervisor = true;
    spec
}

async fn spawn_supervisor(test: &str, params: SupervisorParams) -> ActorRef<SupervisorMsg> {
    let registered_name = format!("{test}/{}", params.name);
    let (supervisor, _handle) = Actor::spawn(Some(registered_name), SupervisorActor, params)
        .await
        .expect("supervisor starts");
    supervisor
}

async fn stop_supervisor(supervisor: &ActorRef<SupervisorMsg>) {
    supervisor
        .stop_and_wait(None, Some(DEADLINE))
        .await
        .expect("supervisor stops");
}

async fn observe(supervisor: &ActorRef<SupervisorMsg>) -> SupervisorSnapshot {
    ractor::call_t!(supervisor, SupervisorMsg::Observe, CALL_TIMEOUT_MS)
        .expect("supervisor answers observe")
}

fn child_snapshot(snapshot: &SupervisorSnapshot, child: &str) -> ChildSnapshot {
    snapshot
        .children
        .iter()
        .find(|candidate| candidate.name == child)
        .unwrap_or_else(|| panic!("{child} in snapshot of {}", snapshot.name))
        .clone()
}

/// Watches the named child for `window` and fails if it is ever running or restarted.
async fn assert_stays_down(supervisor: &ActorRef<SupervisorMsg>, test_child: &TestChild) {
    let child = test_child
        .registered_name
        .rsplit('/')
        .next()
        .unwrap_or_default();
    let until = tokio::time::Instant::now() + STAYS_DOWN_WINDOW;
    while tokio::time::Instant::now() < until {
        let snapshot = child_snapshot(&observe(supervisor).await, child);
        assert!(!snapshot.running, "{child} was restarted: {snapshot:?}");
        assert_eq!(snapshot.counters.restarts, 0, "{child} was restarted");
        assert!(
            test_child.actor_opt().is_none(),
            "{child} is registered again"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    assert_eq!(test_child.num_starts(), 1, "{child} was started again");
}

/// Proves a child that panics in `handle` is counted as a panic (not an error) and restarted
/// under its registered name as a new actor that answers again.
#[tokio::test]
async fn panicking_child_is_counted_and_restarted() {
    install_panic_hook();
    let test = "panicking_child_is_counted_and_restarted";
    let worker = TestChild::new(test, "worker");
    let params = supervisor_params("sup", vec![worker.spec(RestartType::Permanent, None)]);
    let supervisor = spawn_supervisor(test, params).await;
    let old_id = worker.actor().get_id();

    worker.send(TestChildMsg::Panic);

    let snapshot = wait_for_child(&supervisor, "worker", DEADLINE, |child| {
        child.running && child.counters.restarts == 1
    })
    .await;
    let expected_counters = Counters {
        restarts: 1,
        panics: 1,
        ..Counters::default()
    };
    assert_eq!(snapshot.counters, expected_counters);
    let last_exit = snapshot.last_exit.expect("exit recorded");
    assert_eq!(last_exit.kind, ExitKind::Panic);
    assert!(
        last_exit.message.contains("panicked on request"),
        "{last_exit:?}"
    );
    let supervisor_counters = observe(&supervisor).await.counters;
    assert_eq!(supervisor_counters, expected_counters);

    let new_worker = worker.wait_for_new_incarnation(old_id).await;
    assert_ne!(new_worker.get_id(), old_id);
    assert_eq!(
        worker.ping().await,
        1,
        "the new incarnation starts from fresh state"
    );
    stop_supervisor(&supervisor).await;
}

/// Proves a child that returns `Err` from `handle` is counted as an error (not a panic) and
/// restarted.
#[tokio::test]
async fn failing_child_is_counted_as_error_and_restarted() {
    install_panic_hook();
    let test = "failing_child_is_counted_as_error_and_restarted";
    let worker = TestChild::new(test, "worker");
    let params = supervisor_params("sup", vec![worker.spec(RestartType::Permanent, None)]);
    let supervisor = spawn_supervisor(test, params).await;
    let old_id = worker.actor().get_id();

    worker.send(TestChildMsg::Fail);

    let snapshot = wait_for_child(&supervisor, "worker", DEADLINE, |child| {
        child.running && child.counters.restarts == 1
    })
    .await;
    let expected_counters = Counters {
        restarts: 1,
        errors: 1,
        ..Counters::default()
    };
    assert_eq!(snapshot.counters, expected_counters);
    let last_exit = snapshot.last_exit.expect("exit recorded");
    assert_eq!(last_exit.kind, ExitKind::Error);
    assert!(
        last_exit.message.contains("failed on request"),
        "{last_exit:?}"
    );
    worker.wait_for_new_incarnation(old_id).await;
    assert_eq!(worker.ping().await, 1);
    stop_supervisor(&supervisor).await;
}

/// Proves a child busy past the hang timeout is killed no earlier than that timeout, counted
/// as a hang (not a kill) and restarted, and that the new incarnation answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_child_is_killed_counted_and_restarted() {
    install_panic_hook();
    let test = "hung_child_is_killed_counted_and_restarted";
    let worker = TestChild::new(test, "worker");
    let liveness = Liveness::default();
    let spec = worker.spec(RestartType::Permanent, Some(liveness.clone()));
    let supervisor = spawn_supervisor(test, supervisor_params("sup", vec![spec])).await;
    let old_id = worker.actor().get_id();

    worker.send(TestChildMsg::Hang);

    let snapshot = wait_for_child(&supervisor, "worker", DEADLINE, |child| {
        child.running && child.counters.restarts == 1
    })
    .await;
    let expected_counters = Counters {
        restarts: 1,
        hangs: 1,
        ..Counters::default()
    };
    assert_eq!(snapshot.counters, expected_counters);
    assert_eq!(
        snapshot.last_exit.expect("exit recorded").kind,
        ExitKind::Hang
    );
    let hung_for = worker.started_at(1) - worker.misbehaved_at(0);
    assert!(
        hung_for >= HANG_TIMEOUT,
        "killed after {hung_for:?}, before the hang timeout"
    );
    worker.wait_for_new_incarnation(old_id).await;
    assert_eq!(worker.ping().await, 1);
    // The busy guard drops just after the reply is sent, so idleness is awaited.
    eventually(DEADLINE, || async {
        liveness.busy_for().is_none().then_some(())
    })
    .await;
    stop_supervisor(&supervisor).await;
}

/// Proves a child killed from outside (not by hang detection) is counted as killed and
/// restarted.
#[tokio::test]
async fn child_killed_from_outside_is_counted_as_killed() {
    install_panic_hook();
    let test = "child_killed_from_outside_is_counted_as_killed";
    let worker = TestChild::new(test, "worker");
    let params = supervisor_params("sup", vec![worker.spec(RestartType::Permanent, None)]);
    let supervisor = spawn_supervisor(test, params).await;
    let old_worker = worker.actor();

    old_worker.kill();

    let snapshot = wait_for_child(&supervisor, "worker", DEADLINE, |child| {
        child.running && child.counters.restarts == 1
    })
    .await;
    let expected_counters = Counters {
        restarts: 1,
        kills: 1,
        ..Counters::default()
    };
    assert_eq!(snapshot.counters, expected_counters);
    assert_eq!(
        snapshot.last_exit.expect("exit recorded").kind,
        ExitKind::Killed
    );
    worker.wait_for_new_incarnation(old_worker.get_id()).await;
    assert_eq!(worker.ping().await, 1);
    stop_supervisor(&supervisor).await;
}

/// Proves a supervisor whose children need more than `max_restarts` restarts within its
/// window fails itself with a "restart intensity" error, and that its parent counts that as
/// the child supervisor's error and restarts it with fresh state and children.
#[tokio::test]
async fn exceeding_restart_intensity_escalates_to_parent() {
    install_panic_hook();
    let test = "exceeding_restart_intensity_escalates_to_parent";
    let worker = TestChild::new(test, "worker");
    let inner_params = SupervisorParams {
        intensity: RestartIntensity {
            max_restarts: 2,
            within: Duration::from_secs(10),
        },
        ..supervisor_params("inner", vec![worker.spec(RestartType::Permanent, None)])
    };
    let outer_params = supervisor_params("outer", vec![supervisor_child_spec(test, inner_params)]);
    let outer = spawn_supervisor(test, outer_params).await;
    let inner_registered_name = format!("{test}/inner");
    let old_inner_id = ractor::registry::where_is(&inner_registered_name)
        .expect("inner supervisor is registered")
        .get_id();

    // Two failures are restarted; the third exceeds the intensity.
    let mut worker_id = worker.actor().get_id();
    for _ in 0..3 {
        worker.send(TestChildMsg::Fail);
        worker_id = worker.wait_for_new_incarnation(worker_id).await.get_id();
    }

    let inner_snapshot = wait_for_child(&outer, "inner", DEADLINE, |child| {
        child.running && child.counters.restarts == 1
    })
    .await;
    // The parent counts the escalation: the child supervisor's own counters died with it.
    let expected_counters = Counters {
        restarts: 1,
        errors: 1,
        escalations: 1,
        ..Counters::default()
    };
    assert_eq!(inner_snapshot.counters, expected_counters);
    let last_exit = inner_snapshot.last_exit.expect("escalation recorded");
    assert_eq!(last_exit.kind, ExitKind::Error);
    assert!(
        last_exit.message.contains("restart intensity"),
        "{last_exit:?}"
    );
    assert_eq!(observe(&outer).await.counters, expected_counters);

    let new_inner = inner_snapshot
        .supervisor
        .expect("restarted inner supervisor observed");
    assert_eq!(
        new_inner.counters,
        Counters::default(),
        "the new inner starts from zero"
    );
    let new_inner_worker = child_snapshot(&new_inner, "worker");
    assert!(new_inner_worker.running);
    assert_eq!(new_inner_worker.counters, Counters::default());
    let new_inner_id = ractor::registry::where_is(&inner_registered_name)
        .expect("inner supervisor is registered again")
        .get_id();
    assert_ne!(new_inner_id, old_inner_id);
    // Three restarts by the old inner supervisor, one start by the new one, plus the first.
    assert_eq!(worker.num_starts(), 4);
    assert_eq!(worker.ping().await, 1);
    stop_supervisor(&outer).await;
}

/// Proves restarts older than the intensity window no longer count: failures spaced wider
/// than `within` never escalate, even past `max_restarts` in total.
#[tokio::test]
async fn restarts_outside_intensity_window_do_not_escalate() {
    install_panic_hook();
    let test = "restarts_outside_intensity_window_do_not_escalate";
    let within = Duration::from_millis(60);
    let worker = TestChild::new(test, "worker");
    let params = SupervisorParams {
        intensity: RestartIntensity {
            max_restarts: 1,
            within,
        },
        ..supervisor_params("sup", vec![worker.spec(RestartType::Permanent, None)])
    };
    let supervisor = spawn_supervisor(test, params).await;
    let supervisor_id = supervisor.get_id();

    let mut worker_id = worker.actor().get_id();
    for failure in 0..3 {
        worker.send(TestChildMsg::Fail);
        worker_id = worker.wait_for_new_incarnation(worker_id).await.get_id();
        // The window is what this test is about: the next failure must fall outside it.
        tokio::time::sleep_until((worker.misbehaved_at(failure) + within * 2).into()).await;
    }

    let snapshot = observe(&supervisor).await;
    assert_eq!(snapshot.counters.errors, 3);
    assert_eq!(snapshot.counters.restarts, 3);
    assert_eq!(snapshot.counters.escalations, 0);
    let registered_id = ractor::registry::where_is(format!("{test}/sup"))
        .expect("supervisor still registered")
        .get_id();
    assert_eq!(registered_id, supervisor_id);
    stop_supervisor(&supervisor).await;
}

/// Proves a `Temporary` child that panics is counted but never restarted.
#[tokio::test(start_paused = true)]
async fn temporary_child_is_not_restarted_after_panic() {
    install_panic_hook();
    let test = "temporary_child_is_not_restarted_after_panic";
    let worker = TestChild::new(test, "worker");
    let params = supervisor_params("sup", vec![worker.spec(RestartType::Temporary, None)]);
    let supervisor = spawn_supervisor(test, params).await;

    worker.send(TestChildMsg::Panic);

    let snapshot = wait_for_child(&supervisor, "worker", DEADLINE, |child| {
        child.counters.panics == 1
    })
    .await;
    assert!(!snapshot.running);
    assert_eq!(snapshot.restart, RestartType::Temporary);
    assert_stays_down(&supervisor, &worker).await;
    stop_supervisor(&supervisor).await;
}

/// Proves a `Transient` child that stops normally stays down, while a `Transient` child that
/// panics is restarted.
#[tokio::test(start_paused = true)]
async fn transient_child_is_restarted_only_after_abnormal_exit() {
    install_panic_hook();
    let test = "transient_child_is_restarted_only_after_abnormal_exit";
    let stopping = TestChild::new(test, "stopping");
    let panicking = TestChild::new(test, "panicking");
    let children = vec![
        stopping.spec(RestartType::Transient, None),
        panicking.spec(RestartType::Transient, None),
    ];
    let supervisor = spawn_supervisor(test, supervisor_params("sup", children)).await;
    let old_panicking_id = panicking.actor().get_id();

    stopping.send(TestChildMsg::Stop);
    let stopped = wait_for_child(&supervisor, "stopping", DEADLINE, |child| {
        child.last_exit.is_some()
    })
    .await;
    assert!(!stopped.running);
    assert_eq!(
        stopped.last_exit.expect("exit recorded").kind,
        ExitKind::Normal
    );
    assert_eq!(stopped.counters, Counters::default());

    panicking.send(TestChildMsg::Panic);
    let restarted = wait_for_child(&supervisor, "panicking", DEADLINE, |child| {
        child.running && child.counters.restarts == 1
    })
    .await;
    assert_eq!(restarted.counters.panics, 1);
    panicking.wait_for_new_incarnation(old_panicking_id).await;
    assert_eq!(panicking.ping().await, 1);

    assert_stays_down(&supervisor, &stopping).await;
    stop_supervisor(&supervisor).await;
}

/// Proves a `Permanent` child is restarted even after a normal stop, which counts as no
/// failure.
#[tokio::test]
async fn permanent_child_is_restarted_after_normal_stop() {
    install_panic_hook();
    let test = "permanent_child_is_restarted_after_normal_stop";
    let worker = TestChild::new(test, "worker");
    let params = supervisor_params("sup", vec![worker.spec(RestartType::Permanent, None)]);
    let supervisor = spawn_supervisor(test, params).await;
    let old_id = worker.actor().get_id();

    worker.send(TestChildMsg::Stop);

    let snapshot = wait_for_child(&supervisor, "worker", DEADLINE, |child| {
        child.running && child.counters.restarts == 1
    })
    .await;
    let expected_counters = Counters {
        restarts: 1,
        ..Counters::default()
    };
    assert_eq!(snapshot.counters, expected_counters);
    assert_eq!(
        snapshot.last_exit.expect("exit recorded").kind,
        ExitKind::Normal
    );
    worker.wait_for_new_incarnation(old_id).await;
    assert_eq!(worker.ping().await, 1);
    stop_supervisor(&supervisor).await;
}

/// Proves restarts back off exponentially: the first restart comes at least `backoff_base`
/// after its failure, the second consecutive one at least twice that.
#[tokio::test]
async fn consecutive_restarts_back_off_exponentially() {
    install_panic_hook();
    let test = "consecutive_restarts_back_off_exponentially";
    let backoff_base = Duration::from_millis(50);
    let worker = TestChild::new(test, "worker");
    let params = SupervisorParams {
        backoff_base,
        backoff_max: Duration::from_secs(1),
        ..supervisor_params("sup", vec![worker.spec(RestartType::Permanent, None)])
    };
    let supervisor = spawn_supervisor(test, params).await;

    let first_id = worker.actor().get_id();
    worker.send(TestChildMsg::Fail);
    let second_id = worker.wait_for_new_incarnation(first_id).await.get_id();
    let first_delay = worker.started_at(1) - worker.misbehaved_at(0);
    assert!(
        first_delay >= backoff_base,
        "first restart after {first_delay:?}"
    );

    worker.send(TestChildMsg::Fail);
    worker.wait_for_new_incarnation(second_id).await;
    let found_at = Instant::now();
    let second_failed_at = worker.misbehaved_at(1);
    let second_delay = worker.started_at(2) - second_failed_at;
    assert!(
        second_delay >= backoff_base * 2,
        "second restart after {second_delay:?}"
    );
    let second_delay_seen = found_at - second_failed_at;
    assert!(
        second_delay_seen >= backoff_base * 2,
        "second restart seen after {second_delay_seen:?}"
    );
    stop_supervisor(&supervisor).await;
}

/// Proves one child's crash leaves its sibling alone: same actor, same state, zero counters,
/// and it answers while the crashed child is down and after it is back.
#[tokio::test]
async fn crash_of_one_child_does_not_disturb_its_sibling() {
    install_panic_hook();
    let test = "crash_of_one_child_does_not_disturb_its_sibling";
    let crashing = TestChild::new(test, "crashing");
    let bystander = TestChild::new(test, "bystander");
    let params = SupervisorParams {
        // Long enough that the crashed child is observably down for a while.
        backoff_base: Duration::from_millis(200),
        backoff_max: Duration::from_secs(1),
        ..supervisor_params(
            "sup",
            vec![
                crashing.spec(RestartType::Permanent, None),
                bystander.spec(RestartType::Permanent, None),
            ],
        )
    };
    let supervisor = spawn_supervisor(test, params).await;
    let bystander_id = bystander.actor().get_id();
    let crashing_id = crashing.actor().get_id();
    assert_eq!(bystander.ping().await, 1);

    crashing.send(TestChildMsg::Panic);
    wait_for_child(&supervisor, "crashing", DEADLINE, |child| {
        !child.running && child.counters.panics == 1
    })
    .await;
    assert_eq!(
        bystander.ping().await,
        2,
        "bystander answers while its sibling is down"
    );

    crashing.wait_for_new_incarnation(crashing_id).await;
    wait_for_child(&supervisor, "crashing", DEADLINE, |child| child.running).await;
    assert_eq!(bystander.ping().await, 3, "bystander kept its state");
    assert_eq!(bystander.actor().get_id(), bystander_id);
    assert_eq!(bystander.num_starts(), 1);
    let bystander_snapshot = child_snapshot(&observe(&supervisor).await, "bystander");
    assert!(bystander_snapshot.running);
    assert_eq!(bystander_snapshot.counters, Counters::default());
    assert_eq!(bystander_snapshot.last_exit, None);
    stop_supervisor(&supervisor).await;
}

/// Proves observation recurses: a child supervisor appears in its parent's snapshot with its
/// own live snapshot, and plain children carry none.
#[tokio::test]
async fn observe_recurses_into_child_supervisors() {
    install_panic_hook();
    let test = "observe_recurses_into_child_supervisors";
    let leaf = TestChild::new(test, "leaf");
    let inner_leaf = TestChild::new(test, "inner-leaf");
    let inner_params =
        supervisor_params("inner", vec![inner_leaf.spec(RestartType::Permanent, None)]);
    let outer_params = supervisor_params(
        "outer",
        vec![
            leaf.spec(RestartType::Permanent, None),
            supervisor_child_spec(test, inner_params),
        ],
    );
    let outer = spawn_supervisor(test, outer_params).await;

    let snapshot = observe(&outer).await;
    assert_eq!(snapshot.name, "outer");
    assert_eq!(snapshot.strategy, "one_for_one");
    assert_eq!(child_snapshot(&snapshot, "leaf").supervisor, None);
    let inner = child_snapshot(&snapshot, "inner")
        .supervisor
        .expect("inner observed");
    assert_eq!(inner.name, "inner");
    assert!(child_snapshot(&inner, "inner-leaf").running);
    assert_eq!(observe_supervisor(&outer).await, Some(snapshot));

    // The nested snapshot is live, not a copy taken at start.
    inner_leaf.send(TestChildMsg::Panic);
    let inner_after = eventually(DEADLINE, || async {
        let inner_opt = child_snapshot(&observe(&outer).await, "inner").supervisor;
        inner_opt.filter(|inner| {
            let inner_leaf_snapshot = child_snapshot(inner, "inner-leaf");
            inner_leaf_snapshot.running && inner_leaf_snapshot.counters.restarts == 1
        })
    })
    .await;
    assert_eq!(
        child_snapshot(&inner_after, "inner-leaf").counters.panics,
        1
    );
    assert_eq!(inner_after.counters.panics, 1);
    let outer_counters = observe(&outer).await.counters;
    assert_eq!(
        outer_counters,
        Counters::default(),
        "the grandchild's crash is the inner's"
    );
    stop_supervisor(&outer).await;
}

/// Starts three permanent children `a`, `b`, `c` under a supervisor with `strategy` and
/// returns it with the children, each having answered one ping.
async fn spawn_three(
    test: &str,
    strategy: SupervisionStrategy,
) -> (ActorRef<SupervisorMsg>, [TestChild; 3]) {
    let children = [
        TestChild::new(test, "a"),
        TestChild::new(test, "b"),
        TestChild::new(test, "c"),
    ];
    let specs = children
        .iter()
        .map(|child| child.spec(RestartType::Permanent, None))
        .collect();
    let params = SupervisorParams {
        strategy,
        ..supervisor_params("sup", specs)
    };
    let supervisor = spawn_supervisor(test, params).await;
    for child in &children {
        assert_eq!(child.ping().await, 1);
    }
    (supervisor, children)
}

/// Proves `one_for_all` restarts every child when one panics: the siblings come back as new
/// incarnations (their ping count starts again), in start order, each counted as restarted,
/// while only the failed child counts the panic.
#[tokio::test]
async fn one_for_all_restarts_every_child() {
    install_panic_hook();
    let test = "one_for_all_restarts_every_child";
    let (supervisor, [a, b, c]) = spawn_three(test, SupervisionStrategy::OneForAll).await;
    let old_ids = [a.actor().get_id(), b.actor().get_id(), c.actor().get_id()];
    b.send(TestChildMsg::Panic);
    for (child, old_id) in [&a, &b, &c].into_iter().zip(old_ids) {
        child.wait_for_new_incarnation(old_id).await;
        assert_eq!(child.ping().await, 1, "a fresh incarnation");
        assert_eq!(child.num_starts(), 2);
    }
    assert!(
        a.started_at(1) <= c.started_at(1),
        "restarted in start order"
    );
    let snapshot = observe(&supervisor).await;
    assert_eq!(snapshot.strategy, "one_for_all");
    assert_eq!(child_snapshot(&snapshot, "b").counters.panics, 1);
    assert_eq!(child_snapshot(&snapshot, "a").counters.panics, 0);
    for name in ["a", "b", "c"] {
        assert_eq!(
            child_snapshot(&snapshot, name).counters.restarts,
            1,
            "{name}"
        );
    }
    assert_eq!(snapshot.counters.restarts, 3);
    stop_supervisor(&supervisor).await;
}

/// Proves `rest_for_one` restarts the failed child and those started after it, and leaves
/// the ones started before it alone (same incarnation, ping count goes on).
#[tokio::test]
async fn rest_for_one_restarts_the_failed_child_and_later_ones() {
    install_panic_hook();
    let test = "rest_for_one_restarts_the_failed_child_and_later_ones";
    let (supervisor, [a, b, c]) = spawn_three(test, SupervisionStrategy::RestForOne).await;
    let a_id = a.actor().get_id();
    let (b_id, c_id) = (b.actor().get_id(), c.actor().get_id());
    b.send(TestChildMsg::Fail);
    b.wait_for_new_incarnation(b_id).await;
    c.wait_for_new_incarnation(c_id).await;
    assert_eq!(b.ping().await, 1);
    assert_eq!(c.ping().await, 1);
    assert_eq!(a.actor().get_id(), a_id, "a was not restarted");
    assert_eq!(a.ping().await, 2, "a kept its state");
    assert_eq!(a.num_starts(), 1);
    let snapshot = observe(&supervisor).await;
    assert_eq!(snapshot.strategy, "rest_for_one");
    assert_eq!(child_snapshot(&snapshot, "b").counters.errors, 1);
    assert_eq!(child_snapshot(&snapshot, "a").counters.restarts, 0);
    assert_eq!(child_snapshot(&snapshot, "c").counters.restarts, 1);
    stop_supervisor(&supervisor).await;
}

/// Proves `rest_for_one` restarts nobody else when the last child fails, and that a hang is
/// detected and handled by the strategy like a crash.
#[tokio::test]
async fn rest_for_one_hang_of_the_last_child_restarts_only_it() {
    install_panic_hook();
    let test = "rest_for_one_hang_of_the_last_child_restarts_only_it";
    let a = TestChild::new(test, "a");
    let b = TestChild::new(test, "b");
    let liveness = Liveness::default();
    let params = SupervisorParams {
        strategy: SupervisionStrategy::RestForOne,
        ..supervisor_params(
            "sup",
            vec![
                a.spec(RestartType::Permanent, None),
                b.spec(RestartType::Permanent, Some(liveness)),
            ],
        )
    };
    let supervisor = spawn_supervisor(test, params).await;
    assert_eq!(a.ping().await, 1);
    let b_id = b.actor().get_id();
    b.send(TestChildMsg::Hang);
    b.wait_for_new_incarnation(b_id).await;
    let snapshot = wait_for_child(&supervisor, "b", DEADLINE, |child| {
        child.counters.hangs == 1
    })
    .await;
    assert_eq!(
        snapshot.last_exit.map(|exit| exit.kind),
        Some(ExitKind::Hang)
    );
    assert_eq!(a.ping().await, 2, "a was not restarted");
    stop_supervisor(&supervisor).await;
}

/// Proves the intensity limit holds under `one_for_all` too: a group restart counts once per
/// failure, and one failure more than `max_restarts` in the window escalates to the parent,
/// which restarts the whole subtree.
#[tokio::test]
async fn one_for_all_intensity_limit_escalates() {
    install_panic_hook();
    let test = "one_for_all_intensity_limit_escalates";
    let a = TestChild::new(test, "a");
    let b = TestChild::new(test, "b");
    let inner_params = SupervisorParams {
        strategy: SupervisionStrategy::OneForAll,
        intensity: RestartIntensity {
            max_restarts: 2,
            within: Duration::from_secs(10),
        },
        ..supervisor_params(
            "inner",
            vec![
                a.spec(RestartType::Permanent, None),
                b.spec(RestartType::Permanent, None),
            ],
        )
    };
    let outer = spawn_supervisor(
        test,
        supervisor_params("outer", vec![supervisor_child_spec(test, inner_params)]),
    )
    .await;
    let mut a_id = a.actor().get_id();
    for _ in 0..3 {
        a.send(TestChildMsg::Panic);
        a_id = a.wait_for_new_incarnation(a_id).await.get_id();
    }
    let inner = wait_for_child(&outer, "inner", DEADLINE, |child| {
        child.running && child.counters.escalations == 1
    })
    .await;
    assert_eq!(inner.counters.restarts, 1);
    let new_inner = inner.supervisor.expect("restarted inner observed");
    assert_eq!(new_inner.strategy, "one_for_all");
    assert_eq!(new_inner.counters, Counters::default());
    // Two group restarts by the old inner, one start by the new inner, plus the first start.
    assert_eq!(b.num_starts(), 4);
    assert_eq!(b.ping().await, 1);
    stop_supervisor(&outer).await;
}

/// Proves operator controls: stop drains first and keeps the child down (not restarted, not
/// counted as a failure), start brings it back, restart replaces a running child, and unknown
/// paths are refused.
#[tokio::test(start_paused = true)]
async fn operator_stop_start_and_restart() {
    install_panic_hook();
    let test = "operator_stop_start_and_restart";
    let worker = TestChild::new(test, "worker");
    let drained = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut spec = worker.spec(RestartType::Permanent, None);
    let drained_by_hook = drained.clone();
    spec.drain = Some(Arc::new(move || {
        let drained = drained_by_hook.clone();
        Box::pin(async move {
            drained.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        })
    }));
    let inner = supervisor_params("inner", vec![spec]);
    let outer = spawn_supervisor(
        test,
        supervisor_params("outer", vec![supervisor_child_spec(test, inner)]),
    )
    .await;
    let path = |names: &[&str]| names.iter().map(|name| (*name).to_owned()).collect();
    control_supervisor(&outer, path(&["inner", "worker"]), ControlAction::Stop)
        .await
        .expect("stop succeeds");
    assert_eq!(drained.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(worker.actor_opt().is_none());
    tokio::time::sleep(STAYS_DOWN_WINDOW).await;
    let snapshot = observe(&outer).await;
    let inner_snapshot = child_snapshot(&snapshot, "inner")
        .supervisor
        .expect("inner");
    let worker_snapshot = child_snapshot(&inner_snapshot, "worker");
    assert_eq!(worker_snapshot.status, ChildStatus::Stopped);
    assert_eq!(worker_snapshot.counters, Counters::default());
    assert_eq!(worker.num_starts(), 1, "a stopped child is not restarted");

    control_supervisor(&outer, path(&["inner", "worker"]), ControlAction::Start)
        .await
        .expect("start succeeds");
    assert_eq!(worker.ping().await, 1);
    let old_id = worker.actor().get_id();
    control_supervisor(&outer, path(&["inner", "worker"]), ControlAction::Restart)
        .await
        .expect("restart succeeds");
    assert_ne!(worker.actor().get_id(), old_id);
    assert_eq!(drained.load(std::sync::atomic::Ordering::SeqCst), 2);

    // Restarting the subtree drains its children through the child supervisor.
    control_supervisor(&outer, path(&["inner"]), ControlAction::Restart)
        .await
        .expect("subtree restart succeeds");
    assert_eq!(drained.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert_eq!(worker.ping().await, 1);

    assert_eq!(
        control_supervisor(&outer, path(&["nope"]), ControlAction::Stop).await,
        Err(ControlError::NotFound("nope".to_owned()))
    );
    assert_eq!(
        control_supervisor(&outer, path(&["inner", "worker", "x"]), ControlAction::Stop).await,
        Err(ControlError::NotASupervisor("worker".to_owned()))
    );
    stop_supervisor(&outer).await;
}

/// Proves an operator's stop or restart does not hold the supervisors up while the child
/// drains: with a drain that waits until the test lets it go, the outer and inner supervisors
/// still answer observations, a sibling that panics meanwhile is restarted, and the restart
/// finishes (with a new incarnation) only once the drain ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisors_keep_supervising_while_an_operator_restart_drains() {
    install_panic_hook();
    let test = "supervisors_keep_supervising_while_an_operator_restart_drains";
    let slow = TestChild::new(test, "slow");
    let sibling = TestChild::new(test, "sibling");
    let drain_started = Arc::new(tokio::sync::Notify::new());
    let drain_release = Arc::new(tokio::sync::Notify::new());
    let mut slow_spec = slow.spec(RestartType::Permanent, None);
    let (started, release) = (drain_started.clone(), drain_release.clone());
    slow_spec.drain = Some(Arc::new(move || {
        let (started, release) = (started.clone(), release.clone());
        Box::pin(async move {
            started.notify_one();
            release.notified().await;
        })
    }));
    let inner = supervisor_params(
        "inner",
        vec![slow_spec, sibling.spec(RestartType::Permanent, None)],
    );
    let outer = spawn_supervisor(
        test,
        supervisor_params("outer", vec![supervisor_child_spec(test, inner)]),
    )
    .await;
    let old_slow = slow.actor().get_id();
    let old_sibling = sibling.actor().get_id();

    let restart = tokio::spawn({
        let outer = outer.clone();
        async move {
            control_supervisor(
                &outer,
                vec!["inner".to_owned(), "slow".to_owned()],
                ControlAction::Restart,
            )
            .await
        }
    });
    drain_started.notified().await;
    sibling.send(TestChildMsg::Panic);
    sibling.wait_for_new_incarnation(old_sibling).await;
    let snapshot = observe(&outer).await;
    let inner_snapshot = child_snapshot(&snapshot, "inner")
        .supervisor
        .expect("inner observed mid-drain");
    assert_eq!(
        child_snapshot(&inner_snapshot, "sibling").counters.panics,
        1
    );
    assert!(!restart.is_finished(), "the restart waits for the drain");
    assert_eq!(
        slow.actor().get_id(),
        old_slow,
        "not stopped before its drain ends"
    );

    drain_release.notify_one();
    restart
        .await
        .expect("restart task")
        .expect("restart succeeds");
    assert_ne!(slow.actor().get_id(), old_slow, "a new incarnation");
    assert_eq!(slow.ping().await, 1);
    stop_supervisor(&outer).await;
}

/// Proves incident dumps are private: a directory the writer creates (parents included) is
/// 0700 and each incident file 0600, whatever the process umask lets through by default.
#[tokio::test]
async fn incident_directory_and_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;

    install_panic_hook();
    let test = "incident_directory_and_files_are_owner_only";
    let base = std::env::temp_dir().join(format!("bulwark-{test}-{}", std::process::id()));
    let dir = base.join("nested").join("incidents");
    let (sink, _writer) = bulwark_supervisors::IncidentSink::start(
        bulwark_supervisors::incident::IncidentWriterParams {
            settings: bulwark_supervisors::IncidentSettings {
                dir: dir.clone(),
                max_files: 10,
                max_bytes: 1 << 20,
                payload_mode: bulwark_supervisors::incident::PayloadMode::Truncate,
                payload_max_chars: 100,
                env_allow: Vec::new(),
                queue_capacity: 4,
                node: test.to_owned(),
            },
            logs: bulwark_supervisors::RecentLogs::new(10),
            env: std::collections::HashMap::new(),
        },
    );
    sink.register(test);
    let worker = TestChild::new(test, "worker");
    let supervisor = spawn_supervisor(
        test,
        supervisor_params("sup", vec![worker.spec(RestartType::Permanent, None)]),
    )
    .await;
    let old_id = worker.actor().get_id();
    worker.send(TestChildMsg::Panic);
    worker.wait_for_new_incarnation(old_id).await;
    let files = eventually(DEADLINE, || async {
        let files = bulwark_supervisors::incident::list_files(&dir).unwrap_or_default();
        (!files.is_empty()).then_some(files)
    })
    .await;
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&dir), 0o700, "incident directory");
    assert_eq!(mode(&base.join("nested")), 0o700, "a parent it created");
    for (file, _) in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    bulwark_supervisors::IncidentSink::unregister(test);
    stop_supervisor(&supervisor).await;
    let _ = std::fs::remove_dir_all(&base);
}

/// Proves writing incidents never fails the actor system: with an incident directory that
/// cannot be created (as on a read-only or full disk) a panicking child is still restarted,
/// and the failed write is counted instead.
#[tokio::test]
async fn unwritable_incident_directory_does_not_stop_restarts() {
    install_panic_hook();
    let test = "unwritable_incident_directory_does_not_stop_restarts";
    let (sink, _writer) = bulwark_supervisors::IncidentSink::start(
        bulwark_supervisors::incident::IncidentWriterParams {
            settings: bulwark_supervisors::IncidentSettings {
                // A path below a regular file can never be a directory.
                dir: std::path::PathBuf::from("/proc/version/incidents"),
                max_files: 10,
                max_bytes: 1 << 20,
                payload_mode: bulwark_supervisors::incident::PayloadMode::Truncate,
                payload_max_chars: 100,
                env_allow: Vec::new(),
                queue_capacity: 4,
                node: test.to_owned(),
            },
            logs: bulwark_supervisors::RecentLogs::new(10),
            env: std::collections::HashMap::new(),
        },
    );
    sink.register(test);
    let worker = TestChild::new(test, "worker");
    let supervisor = spawn_supervisor(
        test,
        supervisor_params("sup", vec![worker.spec(RestartType::Permanent, None)]),
    )
    .await;
    let old_id = worker.actor().get_id();
    worker.send(TestChildMsg::Panic);
    worker.wait_for_new_incarnation(old_id).await;
    assert_eq!(worker.ping().await, 1);
    eventually(DEADLINE, || async {
        let failures = sink
            .stats()
            .write_failures
            .load(std::sync::atomic::Ordering::Relaxed);
        (failures == 1).then_some(())
    })
    .await;
    assert_eq!(
        sink.stats()
            .written
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    bulwark_supervisors::IncidentSink::unregister(test);
    stop_supervisor(&supervisor).await;
}
