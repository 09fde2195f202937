//! Bulwark's binary crate: wires config, store, supervision tree and HTTP API into a running
//! service, and owns the process concerns (telemetry, signals, CLI). Benchmarks and the
//! sentiment engines' evaluation live in the `bulwark-bench` package, which boots a node
//! through this library.
//!
//! # Layout
//! - `service`: [`Service`], start and graceful shutdown of one node.
//! - `logging`: the process's subscriber: JSON (or pretty) log lines, the incident log ring, and
//!   OpenTelemetry traces when asked for.
//! - `traces`: which trace export the config and `OTEL_*` ask for, and the tracer provider.
//! - `telemetry`: the metrics catalog, the Prometheus recorder, and the node's own series.
//! - `engines`: which sentiment engines the workers run (ONNX, or the lexicon when degraded).
//! - `demo`: `bulwark demo`, sample jobs end to end on the embedded defaults.
//! - `incidents`: the node's incident sink and `bulwark incident replay`.
//! - `ops_client`: `bulwark ops`, the operator controls over HTTP.
//! - `settings`: `FromConfig`, each subsystem's settings (supervision, store, local queue,
//!   retries, batching, scoring, chaos) built from the config.
//! - `scheduling`: the scheduler's and dead-letter actor's params, built from the config.
//! - `simulate`: `bulwark simulate-provider`, the simulated engine as an HTTP server.
//! - `providers`: the configured providers, built into adapters wrapped in their resilience.
//! - `broker`: the RabbitMQ publisher, intake and `ingress` supervisor, built from `[amqp]`.
//! - `publish`: `bulwark publish`, payloads from a JSONL file to the broker with confirms.
//! - `dlq_cli`: `bulwark dlq stats|list|show|requeue|park|purge` over HTTP.
//! - `enqueue`: `bulwark enqueue`, jobs from a JSONL file through `POST /v1/jobs/batch`.
//! - `keys`: the node's API-key checks built from `[auth]`, and `bulwark keys`.
//! - `listener`: the HTTP listener, plain or TLS (`[http.tls]`).
//! - `cli`: the command line.

pub mod broker;
pub mod cli;
pub mod demo;
pub mod dlq_cli;
pub mod engines;
pub mod enqueue;
pub mod incidents;
pub mod jobs_cli;
pub mod keys;
pub mod launch;
pub mod listener;
pub mod logging;
pub mod ops_client;
pub mod providers;
pub mod publish;
pub mod scheduling;
pub mod service;
pub mod settings;
pub mod simulate;
pub mod telemetry;
pub mod traces;

pub use service::{Service, ShutdownReport};
