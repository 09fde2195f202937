use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Bulwark's measurement tools; see docs/benchmarks.md.
#[derive(Debug, Parser)]
#[command(name = "bulwark-bench", version, about)]
pub struct Cli {
    /// Config file (default: config/bulwark.toml if it exists). Environment variables override it.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Latency the provider path (router, actor, breaker, limiter, bulkhead, retries) adds over
    /// a direct call, against a zero-latency simulator.
    Providers(crate::providers::ProviderBenchArgs),
    /// Slot lag (p50/p99) of one scheduler with many active interval schedules.
    Scheduler(crate::scheduling::SchedulerBenchArgs),
    /// Dead letters stored and requeued per second.
    Dlq(crate::scheduling::DlqBenchArgs),
    /// Broker ceiling (raw lapin) vs end-to-end sentiment jobs over RabbitMQ, in one run.
    Amqp(crate::amqp::AmqpBenchArgs),
    /// What a key check and its rate limits cost one request (in-process).
    Auth(crate::auth::AuthBenchArgs),
    /// Jobs/s stored one at a time vs in batches, through the store and over HTTP, on the
    /// configured database (use a scratch one: the jobs stay queued).
    Enqueue(crate::queue::EnqueueBenchArgs),
    /// Fills the local queue on the configured database, then times one node draining it.
    Queue {
        #[arg(long, default_value_t = 5_000)]
        jobs: usize,
        #[arg(long, default_value_t = 1)]
        texts_per_job: usize,
        /// Nodes draining the queue together: this process and `nodes - 1` processes of this
        /// binary (`queue-node`), each with its own runner, sharing the database.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
        nodes: u16,
    },
    /// One extra node of `queue --nodes`: runs the service until its stdin closes.
    #[command(hide = true)]
    QueueNode,
    /// Time from a supervised child's crash to its restarted incarnation answering.
    Restart(crate::restart::RestartBenchArgs),
    /// Measures accuracy and throughput of a sentiment engine on labeled data.
    Eval(crate::eval::EvalArgs),
}
