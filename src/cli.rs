use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Bulwark: an actor-based worker system where jobs are never lost.
#[derive(Debug, Parser)]
#[command(name = "bulwark", version, about)]
pub struct Cli {
    /// Config file (default: config/bulwark.toml if it exists). Environment variables override it.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the service until SIGINT or SIGTERM.
    Serve,
    /// Runs the service, submits sample sentiment jobs, prints their results, then keeps serving.
    Demo {
        /// How many sample jobs to submit.
        #[arg(long, default_value_t = 24)]
        jobs: usize,
    },
    /// Measures throughput; see docs/benchmarks.md.
    Bench {
        #[command(subcommand)]
        target: BenchTarget,
    },
    /// Measures accuracy and throughput of a sentiment engine on labeled data.
    Eval {
        /// Lines of `label<space>text` (SST-2 format: 0 negative, 1 positive).
        #[arg(long, value_name = "FILE")]
        data: PathBuf,
        #[arg(long, value_enum, default_value_t = EvalEngine::Onnx)]
        engine: EvalEngine,
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
    },
    /// Applies database migrations and exits.
    Migrate,
    /// Inspects the configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Validates the effective configuration and prints it with secrets redacted.
    Check,
}

#[derive(Debug, Subcommand)]
pub enum BenchTarget {
    /// Fills the local queue on the configured database, then times one node draining it.
    Queue {
        #[arg(long, default_value_t = 5_000)]
        jobs: usize,
        #[arg(long, default_value_t = 1)]
        texts_per_job: usize,
    },
}

/// The engine `bulwark eval` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EvalEngine {
    Onnx,
    Lexicon,
    Ensemble,
}
