//! `bulwark-chaos`: Bulwark's game days. Runs fault scenarios against real `bulwark serve`
//! nodes on the local PostgreSQL and RabbitMQ, measures detection, recovery, loss and
//! duplicates, and writes a JSON report per scenario and one HTML report per run.
//!
//! # Layout
//! - `cluster`: the system under test (database, broker namespace, simulator, nodes).
//! - `fault_proxy`: TCP fault proxies (noxious, Toxiproxy's toxics) between nodes and what
//!   they depend on.
//! - `workload`: the producer, the sampler and the outcome-event consumer.
//! - `scenarios`: the catalogue, fault injection and SLOs.
//! - `measure`: detection, recovery, loss, duplicates, the timeline.
//! - `report`: the HTML report.

mod cluster;
mod fault_proxy;
mod faults;
mod measure;
mod report;
mod scenarios;
mod workload;

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "bulwark-chaos",
    about = "Game days for Bulwark: fault scenarios, measured"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Lists the scenarios.
    List,
    /// Runs scenarios by name, `--smoke` (the fast subset) or `--all`.
    Run {
        scenarios: Vec<String>,
        #[arg(long, conflicts_with = "smoke")]
        all: bool,
        #[arg(long)]
        smoke: bool,
        /// The bulwark binary; default target/release/bulwark, else target/debug/bulwark.
        #[arg(long)]
        bin: Option<PathBuf>,
        /// Where reports go (a folder per scenario, report.html and summary.json).
        #[arg(long, default_value = "target/chaos")]
        out: PathBuf,
        #[arg(
            long,
            env = "CHAOS_POSTGRES_URL",
            default_value = "postgres://postgres@127.0.0.1:5432/postgres"
        )]
        postgres_url: String,
        #[arg(
            long,
            env = "CHAOS_AMQP_URL",
            default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
        )]
        amqp_url: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Commands::List => {
            for scenario in scenarios::catalogue() {
                println!(
                    "{:<28} {:<9} {}{}",
                    scenario.name,
                    format!("{:?}", scenario.transport),
                    scenario.description,
                    if scenario.smoke { " [smoke]" } else { "" }
                );
            }
            Ok(())
        }
        Commands::Run {
            scenarios: names,
            all,
            smoke,
            bin,
            out,
            postgres_url,
            amqp_url,
        } => {
            let catalogue = scenarios::catalogue();
            let chosen: Vec<scenarios::Scenario> = if all {
                catalogue
            } else if smoke {
                catalogue
                    .into_iter()
                    .filter(|scenario| scenario.smoke)
                    .collect()
            } else {
                if names.is_empty() {
                    bail!(
                        "name scenarios to run, or pass --smoke or --all (see `bulwark-chaos list`)"
                    );
                }
                let mut chosen = Vec::new();
                for name in &names {
                    let scenario = catalogue
                        .iter()
                        .find(|scenario| scenario.name == name)
                        .with_context(|| {
                            format!("no scenario named `{name}` (see `bulwark-chaos list`)")
                        })?;
                    chosen.push(scenario.clone());
                }
                chosen
            };
            let bin = match bin {
                Some(bin) => bin,
                None => ["target/release/bulwark", "target/debug/bulwark"]
                    .into_iter()
                    .map(PathBuf::from)
                    .find(|path| path.exists())
                    .context(
                        "no bulwark binary: build one (cargo build --bin bulwark) or pass --bin",
                    )?,
            };
            let bin = std::fs::canonicalize(&bin)
                .with_context(|| format!("no bulwark binary at {}", bin.display()))?;
            std::fs::create_dir_all(&out)?;
            let params = scenarios::RunParams {
                bin,
                postgres_url,
                amqp_url,
                out_dir: std::fs::canonicalize(&out)?,
            };
            let mut reports = Vec::new();
            let mut failures = Vec::new();
            for scenario in &chosen {
                eprintln!("== {}: {}", scenario.name, scenario.description);
                match scenarios::run(scenario, &params).await {
                    Ok(report) => {
                        print_summary(&report);
                        if !report.pass {
                            failures.push(scenario.name.to_owned());
                        }
                        reports.push(report);
                    }
                    Err(error) => {
                        eprintln!("   error: {error:#}");
                        failures.push(scenario.name.to_owned());
                    }
                }
            }
            let commit = git_commit();
            let date = utc_date();
            std::fs::write(
                out.join("report.html"),
                report::html(&reports, &commit, &date),
            )?;
            std::fs::write(
                out.join("summary.json"),
                serde_json::to_vec_pretty(&serde_json::json!({
                    "commit": commit,
                    "date": date,
                    "scenarios": reports.iter().map(|report| serde_json::json!({
                        "name": report.name,
                        "pass": report.pass,
                        "detect_ms": report.measured.detect_ms,
                        "recover_ms": report.measured.recover_ms,
                        "lost": report.measured.num_lost,
                        "duplicate_executions": report.measured.num_duplicate_executions,
                        "outcome_conflicts": report.measured.num_outcome_conflicts,
                        "client_errors": report.measured.client_errors,
                        "reclaim_p99_ms": report.reclaim_p99_ms,
                    })).collect::<Vec<_>>(),
                }))?,
            )?;
            eprintln!("report: {}", out.join("report.html").display());
            if !failures.is_empty() {
                bail!("scenarios failed: {}", failures.join(", "));
            }
            Ok(())
        }
    }
}

fn print_summary(report: &scenarios::ScenarioReport) {
    let measured = &report.measured;
    let errors: u64 = measured.client_errors.values().sum();
    let ms = |ms_opt: Option<u64>| ms_opt.map_or("-".to_owned(), |ms| format!("{ms} ms"));
    println!(
        "| {} | {} | {} | {} | {} | {} | {} | {} |",
        report.name,
        ms(measured.detect_ms),
        ms(measured.recover_ms),
        measured.num_lost,
        measured.num_duplicate_executions,
        measured.num_outcome_conflicts,
        errors,
        if report.pass { "pass" } else { "FAIL" }
    );
    for slo in report.slos.iter().filter(|slo| !slo.pass) {
        println!(
            "   failed SLO {}: target {}, actual {}",
            slo.name, slo.target, slo.actual
        );
    }
    if !measured.lost_ids.is_empty() {
        println!(
            "   lost: {:?}",
            measured.lost_ids.iter().take(10).collect::<Vec<_>>()
        );
    }
}

fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map_or("unknown".to_owned(), |output| {
            String::from_utf8_lossy(&output.stdout).trim().to_owned()
        })
}

fn utc_date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map_or("unknown".to_owned(), |output| {
            String::from_utf8_lossy(&output.stdout).trim().to_owned()
        })
}
