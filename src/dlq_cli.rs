//! `bulwark dlq …`: the dead-letter operator commands, talking to a running node over HTTP
//! (the same operations as `/v1/dead-letters`).

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

/// Options of `bulwark dlq`.
#[derive(Debug, Clone, Args)]
pub struct DlqArgs {
    /// The node to talk to.
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:8080",
        env = "BULWARK_URL"
    )]
    pub url: String,
    #[command(subcommand)]
    pub action: DlqAction,
}

/// Which dead letters a command selects.
#[derive(Debug, Clone, Default, Args)]
pub struct DlqFilter {
    /// `pending`, `retrying`, `parked`, `requeued` or `recovered`.
    #[arg(long)]
    pub status: Option<String>,
    /// The original queue: `local` or a broker queue.
    #[arg(long)]
    pub queue: Option<String>,
    #[arg(long)]
    pub kind: Option<String>,
    #[arg(long)]
    pub error_code: Option<String>,
}

impl DlqFilter {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("status", &self.status),
            ("queue", &self.queue),
            ("kind", &self.kind),
            ("error_code", &self.error_code),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.clone().map(|value| (key, value)))
        .collect()
    }
}

#[derive(Debug, Clone, Subcommand)]
pub enum DlqAction {
    /// Depth by queue and status, and by error code.
    Stats,
    /// Dead letters, newest first.
    List {
        #[command(flatten)]
        filter: DlqFilter,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// The `next_cursor` of the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One dead letter with its original message.
    Show { id: String },
    /// Requeues one letter by id, or every letter the filter selects.
    Requeue {
        /// Requeue this letter only.
        id: Option<String>,
        #[command(flatten)]
        filter: DlqFilter,
        /// Requeue every letter when no filter is given.
        #[arg(long)]
        all: bool,
    },
    /// Parks a letter: no automatic retry until requeued.
    Park { id: String },
    /// Deletes the letters the filter selects (an empty filter needs --all).
    Purge {
        #[command(flatten)]
        filter: DlqFilter,
        #[arg(long)]
        all: bool,
    },
}

/// Runs one `bulwark dlq` command with the key in `BULWARK_API_KEY`; prints the answer as
/// JSON. Exit 1 on an error answer.
pub async fn run(args: &DlqArgs) -> anyhow::Result<ExitCode> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .context("failed to build the HTTP client")?;
    let base = args.url.trim_end_matches('/');
    let request = match &args.action {
        DlqAction::Stats => client.get(format!("{base}/v1/dead-letters/stats")),
        DlqAction::List {
            filter,
            limit,
            cursor,
        } => {
            let mut query = filter.pairs();
            query.push(("limit", limit.to_string()));
            if let Some(cursor) = cursor {
                query.push(("cursor", cursor.clone()));
            }
            client.get(format!("{base}/v1/dead-letters")).query(&query)
        }
        DlqAction::Show { id } => client.get(format!("{base}/v1/dead-letters/{id}")),
        DlqAction::Requeue { id: Some(id), .. } => {
            client.post(format!("{base}/v1/dead-letters/{id}/requeue"))
        }
        DlqAction::Requeue {
            id: None,
            filter,
            all,
        } => {
            let mut body = json!({});
            for (key, value) in filter.pairs() {
                body[key] = Value::String(value);
            }
            if *all {
                body["all"] = Value::Bool(true);
            }
            client
                .post(format!("{base}/v1/dead-letters/requeue"))
                .json(&body)
        }
        DlqAction::Park { id } => client.post(format!("{base}/v1/dead-letters/{id}/park")),
        DlqAction::Purge { filter, all } => {
            let mut query = filter.pairs();
            if *all {
                query.push(("all", "true".to_owned()));
            }
            client
                .delete(format!("{base}/v1/dead-letters"))
                .query(&query)
        }
    };
    send_and_print(request, base).await
}

/// Sends a CLI command's request with the key in `BULWARK_API_KEY` and prints the answer as
/// JSON. Exit 1 on an error answer, naming its code and message.
pub(crate) async fn send_and_print(
    request: reqwest::RequestBuilder,
    base: &str,
) -> anyhow::Result<ExitCode> {
    let request = match std::env::var(crate::ops_client::API_KEY_ENV) {
        Ok(key) if !key.is_empty() => request.bearer_auth(key),
        _ => request,
    };
    let response = request.send().await.map_err(|error| {
        anyhow::anyhow!(
            "cannot reach bulwark at {base}: {error} (is `bulwark serve` running there? pass --url)"
        )
    })?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .unwrap_or_else(|_| json!({"status": status.as_u16()}));
    if status.is_success() {
        println!("{}", serde_json::to_string_pretty(&body)?);
        Ok(ExitCode::SUCCESS)
    } else {
        let message = body["message"].as_str().unwrap_or("no message");
        let code = body["code"].as_str().unwrap_or("UNKNOWN");
        eprintln!("error: {} {code}: {message}", status.as_u16());
        Ok(ExitCode::FAILURE)
    }
}
