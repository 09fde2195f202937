//! Helpers shared by Bulwark's tests, so each concern has one implementation: polling a
//! condition with a deadline, probes that record what the code under test hands them, and
//! waiters on a supervisor's restarts. A dev-dependency only: no shipped crate depends on it.
//!
//! # Layout
//! - `eventually`: [`eventually`], polls a condition until it holds or its deadline passes; the
//!   panic names the call site that waited. Works on paused tokio time too.
//! - `probe`: [`Probe`], a shared, cloneable record of what a fake received, in order.
//! - `supervision` (feature `supervision`): [`wait_for_child`] and [`wait_for_restart_after`],
//!   poll a supervisor's snapshot until a child is in the awaited state.

mod eventually;
mod probe;
#[cfg(feature = "supervision")]
mod supervision;

pub use eventually::{POLL_INTERVAL, eventually};
pub use probe::Probe;
#[cfg(feature = "supervision")]
pub use supervision::{wait_for_child, wait_for_restart_after};
