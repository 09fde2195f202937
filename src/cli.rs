use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Bulwark: an actor-based worker system where jobs are never lost.
#[derive(Debug, Parser)]
#[command(name = "bulwark", version, about)]
pub struct Cli {
    /// Config file (default: config/bulwark.toml if it exists). Environment variables override it.
    #[arg(long, global = true, value_name = "FILE", env = "BULWARK_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the service until SIGINT or SIGTERM.
    Serve,
    /// Serves the simulated answer engine over HTTP (OpenAI and Anthropic wire formats).
    SimulateProvider(crate::simulate::SimulateArgs),
    /// Runs the service, submits sample sentiment jobs, prints their results, then keeps serving.
    Demo {
        /// How many sample jobs to submit.
        #[arg(long, default_value_t = 24)]
        jobs: usize,
    },
    /// Publishes one job per line of a JSONL file of payloads to RabbitMQ, with confirms.
    /// Exit 2 on bad input (naming the line), 1 when the broker fails.
    Publish(crate::publish::PublishArgs),
    /// Submits one job per line of a JSONL file (`-`: stdin) to a running node through
    /// `POST /v1/jobs/batch`, with the key in `BULWARK_API_KEY`; prints each line not stored
    /// and the counts. Exit 1 when a line was invalid or a conflict.
    Enqueue(crate::enqueue::EnqueueArgs),
    /// Applies database migrations and exits.
    Migrate,
    /// Inspects and acts on dead letters of a running node (over HTTP).
    Dlq(crate::dlq_cli::DlqArgs),
    /// Cancels jobs and pauses or resumes kinds on a running node (over HTTP).
    Jobs(crate::jobs_cli::JobsArgs),
    /// Makes, lists, rotates and revokes API keys on the configured database.
    Keys(crate::keys::KeysArgs),
    /// Inspects the configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Works with incident files (crash dumps).
    Incident {
        #[command(subcommand)]
        action: IncidentAction,
    },
    /// Operator controls of a running node over HTTP, with the key in `BULWARK_API_KEY`
    /// (an `operate` key; the deprecated operator token in `ops.token_env` still works).
    Ops {
        /// Base URL of the node.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        #[command(subcommand)]
        action: OpsAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum IncidentAction {
    /// Re-runs an incident's captured message against a fresh actor of the same kind in a
    /// sandbox process. Exit 1: the failure reproduced; 0: it did not; 3: not replayable.
    Replay {
        /// An incident id (looked up in `incidents.dir`) or the path of an incident file.
        incident: String,
        /// How long the sandbox may run before it counts as hung.
        #[arg(long, default_value_t = 30_000)]
        timeout_ms: u64,
    },
    /// The sandbox `replay` starts: scores the texts of a payload file on a fresh sentiment
    /// worker, exits non-zero if that fails.
    #[command(hide = true)]
    ReplaySandbox {
        #[arg(long, value_name = "FILE")]
        payload: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum OpsAction {
    /// Prints the live supervision tree.
    Tree,
    /// Drains, stops and starts the subtree at PATH (e.g. `root/jobs`).
    Restart { path: String },
    /// Drains and stops the subtree at PATH; it stays down until started.
    Stop { path: String },
    /// Starts the stopped subtree at PATH.
    Start { path: String },
}

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Validates the effective configuration and prints it with secrets redacted.
    Check,
}
