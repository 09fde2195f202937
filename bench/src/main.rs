use std::collections::HashMap;
use std::process::ExitCode;

use bulwark::telemetry;
use bulwark_bench::cli::{Cli, Command};
use bulwark_config::{Config, ConfigSources};
use clap::Parser;
use serde::Serialize;
use tracing::error;

/// Exit code for a configuration error, as for a usage error.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let sources = ConfigSources {
        explicit_file: cli.config.clone(),
        env: std::env::vars().collect::<HashMap<String, String>>(),
    };
    let config = match bulwark_config::load(&sources) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Err(error) = telemetry::init_logging(&config.telemetry) {
        eprintln!("error: {error:#}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: failed to start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, &config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            error!(error = format!("{error:#}"), "bulwark-bench failed");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one measurement and prints its report as JSON.
async fn run(command: Command, config: &Config) -> anyhow::Result<()> {
    match command {
        Command::Providers(args) => print(&bulwark_bench::providers::run(&args).await?),
        Command::Scheduler(args) => {
            print(&bulwark_bench::scheduling::scheduler(config, &args).await?)
        }
        Command::Dlq(args) => print(&bulwark_bench::scheduling::dlq(config, &args).await?),
        Command::Amqp(args) => print(&bulwark_bench::amqp::run(config, &args).await?),
        Command::Auth(args) => print(&bulwark_bench::auth::run(config, &args).await?),
        Command::Enqueue(args) => print(&bulwark_bench::queue::enqueue(config, &args).await?),
        Command::Queue {
            jobs,
            texts_per_job,
        } => {
            let params = bulwark_bench::queue::QueueBenchParams {
                num_jobs: jobs,
                texts_per_job,
            };
            print(&bulwark_bench::queue::queue(config, params).await?)
        }
        Command::Restart(args) => print(&bulwark_bench::restart::run(&args).await?),
        Command::Eval(args) => print(&bulwark_bench::eval::evaluate(config, &args)?),
    }
}

fn print(report: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(report)?);
    Ok(())
}
