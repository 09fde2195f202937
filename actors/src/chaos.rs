//! Game-day faults, one vocabulary for every actor: each actor's message enum wraps a [`Fault`]
//! in its `Chaos` variant and commits it with [`Fault::commit`], so supervision can be shown
//! to count and restart a panic, an error return and a hang of any actor. Compiled only with
//! the `chaos` feature, so the hooks never ship by accident.

use std::time::Duration;

use ractor::ActorProcessingErr;

/// A fault an actor commits inside its `handle` when told to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Panics inside `handle`.
    Panic,
    /// Returns an error from `handle`.
    Error,
    /// Blocks `handle` (marked busy) for this long, as a wedged actor would.
    Hang(Duration),
}

impl Fault {
    /// Commits the fault inside the `handle` of the actor `actor` names.
    pub async fn commit(self, actor: &str) -> Result<(), ActorProcessingErr> {
        match self {
            Fault::Panic => panic!("{actor} panicked on purpose (chaos)"),
            Fault::Error => Err(format!("{actor} failed on purpose (chaos)").into()),
            Fault::Hang(duration) => {
                tokio::time::sleep(duration).await;
                Ok(())
            }
        }
    }
}
