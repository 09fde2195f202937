//! The simulated answer engine: deterministic answers about brands, with fault knobs, served
//! in-process ([`SimulatedProvider`]) or over HTTP in both wire formats ([`SimulatorServer`]).

mod engine;
mod faults;
mod provider;
mod server;

pub use engine::{SimulatedAnswer, SimulatedEngine, SimulatedEngineParams, Tone};
pub use faults::{FaultDice, FaultKnobs, FaultOutcome};
pub use provider::SimulatedProvider;
pub use server::{SimulatorParams, SimulatorServer, SimulatorStats, simulator_app};
