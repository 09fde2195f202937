use std::process::ExitCode;

use bulwark::launch;
use bulwark_bench::cli::{Cli, Command};
use bulwark_config::Config;
use clap::Parser;
use serde::Serialize;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match launch::load_config(cli.config.clone()) {
        Ok(config) => config,
        Err(code) => return code,
    };
    launch::run_command("bulwark-bench", &config, async {
        run(cli.command, cli.config, &config).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Runs one measurement and prints its report as JSON.
async fn run(
    command: Command,
    config_file: Option<std::path::PathBuf>,
    config: &Config,
) -> anyhow::Result<()> {
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
            nodes,
        } => {
            let params = bulwark_bench::queue::QueueBenchParams {
                num_jobs: jobs,
                texts_per_job,
                num_nodes: usize::from(nodes),
                config_file,
            };
            print(&bulwark_bench::queue::queue(config, params).await?)
        }
        Command::QueueNode => bulwark_bench::queue::run_extra_node(config).await,
        Command::Restart(args) => print(&bulwark_bench::restart::run(&args).await?),
        Command::Eval(args) => print(&bulwark_bench::eval::evaluate(config, &args)?),
    }
}

fn print(report: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(report)?);
    Ok(())
}
