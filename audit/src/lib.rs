//! AI-visibility audits: an audit asks every prompt of every chosen provider a few times, finds
//! where the brand and its competitors are named in each answer, scores the tone of the
//! sentences naming the brand, stores every item, and summarizes. The crate knows the store,
//! the provider and model types, and nothing of actors or HTTP: the runner reaches providers
//! and the sentiment workers through the [`AnswerSource`] and [`TextScorer`] ports, which the
//! actors crate implements.
//!
//! # Layout
//! - `request`: [`request::AuditRequest`], an audit's input, its bounds and plan.
//! - `analysis`: mention detection, ranks and the summary of an audit (pure, no I/O).
//! - `ports`: [`AnswerSource`] and [`TextScorer`], what the runner needs from the node.
//! - `runner`: [`AuditRunner`], runs one audit: provider fan-out, analysis, tone, store.
//! - `report`: audit reports as CSV and as a self-contained HTML page.
//! - `metrics`: metric names and the events that emit them.

pub mod analysis;
pub mod metrics;
mod ports;
pub mod report;
pub mod request;
mod runner;

pub use ports::{AnswerError, AnswerSource, ScoringError, TextScorer};
pub use runner::{AuditOutcome, AuditRunner, AuditRunnerParams, answer_facts, summary_from_rows};
