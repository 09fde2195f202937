//! `bulwark jobs …`: cancel jobs and pause or resume kinds on a running node over HTTP (the
//! same operations as `/v1/jobs/{id}/cancel`, `/v1/jobs/cancel` and `/v1/kinds/…`).

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::dlq_cli::send_and_print;

/// Options of `bulwark jobs`.
#[derive(Debug, Clone, Args)]
pub struct JobsArgs {
    /// The node to talk to.
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:8080",
        env = "BULWARK_URL"
    )]
    pub url: String,
    #[command(subcommand)]
    pub action: JobsAction,
}

#[derive(Debug, Clone, Subcommand)]
pub enum JobsAction {
    /// One job.
    Show { id: String },
    /// Cancels one job by id, or every unfinished job the filter selects (an `operate` key).
    Cancel {
        /// Cancel this job only.
        id: Option<String>,
        /// Only jobs of this kind (`*`: every kind, as `--all`).
        #[arg(long)]
        kind: Option<String>,
        /// `queued` or `running`.
        #[arg(long)]
        status: Option<String>,
        /// Every kind.
        #[arg(long, conflicts_with = "kind")]
        all: bool,
        /// Print how many jobs the cancel would touch, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Pauses a kind on every node: its jobs wait until it is resumed.
    Pause { kind: String },
    /// Resumes a paused kind.
    Resume { kind: String },
    /// Lists the paused kinds.
    Paused,
}

/// Runs one `bulwark jobs` command with the key in `BULWARK_API_KEY`; prints the answer as
/// JSON. Exit 1 on an error answer.
pub async fn run(args: &JobsArgs) -> anyhow::Result<ExitCode> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .context("failed to build the HTTP client")?;
    let base = args.url.trim_end_matches('/');
    let request = match &args.action {
        JobsAction::Show { id } => client.get(format!("{base}/v1/jobs/{id}")),
        JobsAction::Cancel { id: Some(id), .. } => {
            client.post(format!("{base}/v1/jobs/{id}/cancel"))
        }
        JobsAction::Cancel {
            id: None,
            kind,
            status,
            all,
            dry_run,
        } => {
            let kind = match (kind, all) {
                (Some(kind), _) => kind.as_str(),
                (None, true) => "*",
                (None, false) => {
                    eprintln!("error: name the jobs to cancel: an id, --kind KIND or --all");
                    return Ok(ExitCode::from(2));
                }
            };
            let mut body = json!({"kind": kind, "dry_run": dry_run});
            if let Some(status) = status {
                body["status"] = json!(status);
            }
            client.post(format!("{base}/v1/jobs/cancel")).json(&body)
        }
        JobsAction::Pause { kind } => client.post(format!("{base}/v1/kinds/{kind}/pause")),
        JobsAction::Resume { kind } => client.post(format!("{base}/v1/kinds/{kind}/resume")),
        JobsAction::Paused => client.get(format!("{base}/v1/kinds/paused")),
    };
    send_and_print(request, base).await
}
