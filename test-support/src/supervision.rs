use std::sync::Arc;
use std::time::Duration;

use bulwark_supervisors::{
    ChildSnapshot, ExitKind, SupervisorMsg, SupervisorSnapshot, observe_supervisor,
};
use ractor::ActorRef;

use crate::eventually;

/// Polls the supervisor's snapshot until `check` holds for the child named `child`, and returns
/// that child's snapshot; fails the test at `deadline`, and at once when the supervisor has no
/// such child.
#[track_caller]
pub fn wait_for_child<'a, C>(
    supervisor: &'a ActorRef<SupervisorMsg>,
    child: &'a str,
    deadline: Duration,
    check: C,
) -> impl Future<Output = ChildSnapshot> + 'a
where
    C: Fn(&ChildSnapshot) -> bool + Send + Sync + 'a,
{
    let check = Arc::new(check);
    eventually(deadline, move || {
        let check = check.clone();
        async move {
            let snapshot = observe_supervisor(supervisor).await?;
            let found = snapshot
                .children
                .iter()
                .find(|candidate| candidate.name == child)
                .unwrap_or_else(|| panic!("{child} in snapshot of {}", snapshot.name))
                .clone();
            check(&found).then_some(found)
        }
    })
}

/// Waits until the supervisor's first child (the only one, in a subsystem test) runs again
/// after a restart whose last exit was of `kind`, and returns the supervisor's snapshot.
#[track_caller]
pub fn wait_for_restart_after(
    supervisor: &ActorRef<SupervisorMsg>,
    kind: ExitKind,
    deadline: Duration,
) -> impl Future<Output = SupervisorSnapshot> + '_ {
    eventually(deadline, move || async move {
        let snapshot = observe_supervisor(supervisor).await?;
        let child = snapshot.children.first()?;
        let restarted = child.running
            && child.counters.restarts >= 1
            && child
                .last_exit
                .as_ref()
                .is_some_and(|exit| exit.kind == kind);
        restarted.then_some(snapshot)
    })
}
