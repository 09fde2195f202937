use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bulwark::cli::{Cli, Command, ConfigAction, IncidentAction, OpsAction};
use bulwark::{Service, demo, launch};
use bulwark_config::{Config, LogFormat};
use clap::Parser;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::{error, info, warn};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let explicit_log_format = std::env::var_os("BULWARK_LOG_FORMAT").is_some();
    let mut config = match launch::load_config(cli.config.clone()) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if let Command::Config {
        action: ConfigAction::Check,
    } = &cli.command
    {
        return print_config(&config);
    }
    if matches!(cli.command, Command::Demo { .. }) && !explicit_log_format {
        // The demo talks to a person: readable logs, and only the ones that matter.
        config.telemetry.log_format = LogFormat::Pretty;
        config.telemetry.log_level = "warn".to_owned();
        demo::add_demo_provider(&mut config);
    }
    // One name for the node in its logs, spans and job leases.
    config
        .jobs
        .node_id
        .get_or_insert_with(bulwark::service::default_node_id);
    let config_path = cli.config.clone();
    launch::run_command(
        "bulwark",
        &config,
        run(cli.command, &config, config_path.as_deref()),
    )
}

fn print_config(config: &Config) -> ExitCode {
    match toml::to_string_pretty(config) {
        Ok(text) => {
            println!("# effective configuration (secrets redacted)\n{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: failed to render the configuration: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    command: Command,
    config: &Config,
    config_path: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    match command {
        Command::Incident {
            action:
                IncidentAction::Replay {
                    incident,
                    timeout_ms,
                },
        } => {
            let incident = bulwark::incidents::find(config, &incident)?;
            let timeout = std::time::Duration::from_millis(timeout_ms);
            let (report, code) =
                bulwark::incidents::replay(config_path, &incident, timeout).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(code)
        }
        Command::Incident {
            action: IncidentAction::ReplaySandbox { payload },
        } => bulwark::incidents::replay_sandbox(config, &payload).await,
        Command::Ops { url, action } => {
            let token_opt = [
                bulwark::ops_client::API_KEY_ENV,
                config.ops.token_env.as_str(),
            ]
            .into_iter()
            .find_map(|variable| {
                std::env::var(variable)
                    .ok()
                    .filter(|token| !token.is_empty())
            });
            let request = match action {
                OpsAction::Tree => bulwark::ops_client::OpsRequest::Tree,
                OpsAction::Restart { path } => bulwark::ops_client::OpsRequest::Control {
                    action: "restart",
                    path,
                },
                OpsAction::Stop { path } => bulwark::ops_client::OpsRequest::Control {
                    action: "stop",
                    path,
                },
                OpsAction::Start { path } => bulwark::ops_client::OpsRequest::Control {
                    action: "start",
                    path,
                },
            };
            bulwark::ops_client::run(&url, token_opt.as_deref(), &request).await
        }
        Command::Dlq(args) => bulwark::dlq_cli::run(&args).await,
        Command::Jobs(args) => bulwark::jobs_cli::run(&args).await,
        Command::Enqueue(args) => bulwark::enqueue::run(&args).await,
        Command::Keys(args) => bulwark::keys::run(config, &args).await,
        Command::Migrate => {
            let store = bulwark::service::open_store(config).await?;
            store.close().await;
            println!("migrations applied to {}", config.database.url);
            Ok(ExitCode::SUCCESS)
        }
        Command::Publish(args) => match bulwark::publish::run(config, &args).await {
            Ok(num_published) => {
                println!("published {num_published} jobs of kind {}", args.kind);
                Ok(ExitCode::SUCCESS)
            }
            Err(bulwark::publish::PublishFailure::BadInput(message)) => {
                eprintln!("error: {message}");
                Ok(ExitCode::from(launch::EXIT_CONFIG))
            }
            Err(bulwark::publish::PublishFailure::Broker(error)) => Err(error),
        },
        Command::Serve => serve(config, None).await,
        Command::Demo { jobs } => serve(config, Some(jobs)).await,
        Command::Config { .. } => Ok(print_config(config)),
        Command::SimulateProvider(args) => {
            bulwark::simulate::run(args).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs the service until a signal, or until the supervision tree gives up (exit 1). The first
/// SIGTERM or SIGINT shuts the node down gracefully within `shutdown.timeout_ms`; a second one,
/// or the deadline passing, hands the node's jobs back to the queue and exits at once.
async fn serve(config: &Config, demo_jobs: Option<usize>) -> anyhow::Result<ExitCode> {
    let mut terminate = signal(SignalKind::terminate()).context("failed to listen for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("failed to listen for SIGINT")?;
    let mut service = Service::start(config).await?;
    if let Some(num_jobs) = demo_jobs {
        demo::print_demo_key(&service).await?;
        demo::run(&service, num_jobs).await?;
        demo::run_audit(&service).await?;
        println!(
            "\nserving on {0} (Swagger UI: {0}/docs), Ctrl-C to stop",
            service.base_url
        );
    }
    let tree_failed = tokio::select! {
        _ = terminate.recv() => { info!("received SIGTERM"); false }
        _ = interrupt.recv() => { info!("received SIGINT"); false }
        _ = service.root_finished() => { error!("the supervision tree stopped"); true }
    };
    let lease_release = service.lease_release();
    let deadline = service.shutdown_timeout();
    // The shutdown bounds each of its steps by the deadline itself; this backstop is for a step
    // that would not return (the second lets the last bounded step end first).
    let shutdown = tokio::time::timeout(deadline + DEADLINE_BACKSTOP, service.shutdown());
    let outcome = tokio::select! {
        outcome = shutdown => outcome,
        signal = second_signal(&mut terminate, &mut interrupt) => {
            warn!(signal, "second signal: exiting now, without waiting for running jobs");
            exit_now(&lease_release, EXIT_FORCED).await
        }
    };
    match outcome {
        Ok(result) => {
            result?;
        }
        Err(_) => {
            error!(
                timeout_ms = deadline.as_millis() as u64,
                "the shutdown passed its deadline: exiting now"
            );
            exit_now(&lease_release, EXIT_FORCED).await
        }
    }
    Ok(if tree_failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Exit code of a node that stopped without finishing its shutdown (a second signal, or the
/// deadline passed): its jobs went back to the queue, or their leases will expire.
const EXIT_FORCED: i32 = 1;

/// How long past its deadline a shutdown may run before the process exits without it.
const DEADLINE_BACKSTOP: Duration = Duration::from_secs(1);

/// How long an exit that cannot wait gives the database to take this node's jobs back.
const FORCED_RELEASE_WITHIN: Duration = Duration::from_millis(500);

/// Waits for the next SIGTERM or SIGINT and names it.
async fn second_signal(terminate: &mut Signal, interrupt: &mut Signal) -> &'static str {
    tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    }
}

/// Hands this node's jobs back to the queue (briefly: their leases expire otherwise) and ends
/// the process. Nothing is acked on the way out: broker deliveries not yet acked return to
/// their queues when the connections drop with the process.
async fn exit_now(lease_release: &bulwark::service::LeaseRelease, code: i32) -> ! {
    let num_released = lease_release.release_all(FORCED_RELEASE_WITHIN).await;
    warn!(num_released, code, "exiting before the shutdown finished");
    std::process::exit(code)
}
