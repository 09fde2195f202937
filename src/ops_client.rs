//! `bulwark ops tree|restart|stop|start`: the operator endpoints over HTTP, with the token from
//! the environment variable the config names (`ops.token_env`).

use std::process::ExitCode;

use anyhow::Context;

/// The variable the HTTP commands (`bulwark ops`, `bulwark dlq`) read the API key from.
pub const API_KEY_ENV: &str = "BULWARK_API_KEY";

/// What an `ops` command does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpsRequest {
    Tree,
    /// `restart`, `stop` or `start` of the node at this path (e.g. `root/jobs`).
    Control {
        action: &'static str,
        path: String,
    },
}

/// Sends the request to the node at `base_url`, prints the response body and exits 0 on a 2xx
/// answer, 1 otherwise.
pub async fn run(
    base_url: &str,
    token_opt: Option<&str>,
    request: &OpsRequest,
) -> anyhow::Result<ExitCode> {
    let client = reqwest::Client::new();
    let base_url = base_url.trim_end_matches('/');
    let builder = match request {
        OpsRequest::Tree => client.get(format!("{base_url}/v1/ops/supervisors")),
        OpsRequest::Control { action, path } => client.post(format!(
            "{base_url}/v1/ops/supervisors/{}/{action}",
            path.trim_matches('/').replace('/', ".")
        )),
    };
    let builder = match token_opt {
        Some(token) => builder.bearer_auth(token),
        None => builder,
    };
    let response = builder
        .send()
        .await
        .with_context(|| format!("failed to reach {base_url}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let pretty = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|value| serde_json::to_string_pretty(&value).ok())
        .unwrap_or(body);
    if status.is_success() {
        println!("{pretty}");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: {status}\n{pretty}");
        Ok(ExitCode::FAILURE)
    }
}
