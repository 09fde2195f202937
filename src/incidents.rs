//! Incident wiring for the binary: the sink every failure of this node is reported to, and
//! `bulwark incident replay`, which re-runs a captured message in a sandbox process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bulwark_config::Config;
use bulwark_supervisors::incident::{
    Incident, IncidentWriterParams, PayloadMode, read_all, read_one,
};
use bulwark_supervisors::{IncidentSettings, IncidentSink};
use serde::Serialize;

use crate::settings::FromConfig;

/// Exit code of `incident replay` when the failure reproduced.
pub const EXIT_REPRODUCED: u8 = 1;
/// Exit code of `incident replay` when the message was handled without failing.
pub const EXIT_NOT_REPRODUCED: u8 = 0;
/// Exit code of `incident replay` when the incident cannot be replayed.
pub const EXIT_NOT_REPLAYABLE: u8 = 3;

/// Starts the incident writer for this node and registers it under the node id, where the
/// supervisors of the node's tree find it.
pub fn start_sink(config: &Config, node_id: &str, env: &HashMap<String, String>) -> IncidentSink {
    let payload_mode = match config.incidents.payload_mode.as_str() {
        "full" => PayloadMode::Full,
        "redact" => PayloadMode::Redact,
        _ => PayloadMode::Truncate,
    };
    let (sink, _writer) = IncidentSink::start(IncidentWriterParams {
        settings: IncidentSettings {
            dir: PathBuf::from(&config.incidents.dir),
            max_files: config.incidents.max_files,
            max_bytes: config.incidents.max_bytes,
            payload_mode,
            payload_max_chars: config.incidents.payload_max_chars,
            env_allow: config.incidents.env_allow.clone(),
            queue_capacity: config.incidents.queue_capacity,
            node: node_id.to_owned(),
        },
        logs: crate::logging::recent_logs(),
        env: env.clone(),
    });
    sink.register(node_id);
    sink
}

/// Finds an incident by id in the configured directory, or reads it from a file path.
pub fn find(config: &Config, id_or_file: &str) -> anyhow::Result<Incident> {
    let path = Path::new(id_or_file);
    if path.is_file() {
        return read_one(path).with_context(|| format!("failed to read {id_or_file}"));
    }
    let dir = Path::new(&config.incidents.dir);
    read_all(dir)
        .with_context(|| format!("failed to read {}", dir.display()))?
        .into_iter()
        .find(|incident| incident.id == id_or_file)
        .with_context(|| format!("no incident `{id_or_file}` in {}", dir.display()))
}

/// What a replay found.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    pub incident_id: String,
    pub actor_path: String,
    pub message_type: String,
    /// `reproduced`, `not_reproduced` or `not_replayable`.
    pub verdict: &'static str,
    pub detail: String,
}

/// Re-runs the incident's message in a child process (`bulwark incident replay-sandbox`) with
/// a timeout; a crash, a hang past the timeout or a failed scoring counts as reproduced.
pub async fn replay(
    config_path: Option<&Path>,
    incident: &Incident,
    timeout: Duration,
) -> anyhow::Result<(ReplayReport, ExitCode)> {
    let report = |verdict, detail: String| ReplayReport {
        incident_id: incident.id.clone(),
        actor_path: incident.actor.path.clone(),
        message_type: incident
            .message
            .as_ref()
            .map_or_else(String::new, |message| message.message_type.clone()),
        verdict,
        detail,
    };
    let Some(message) = &incident.message else {
        return Ok((
            report(
                "not_replayable",
                "the incident has no captured message".to_owned(),
            ),
            ExitCode::from(EXIT_NOT_REPLAYABLE),
        ));
    };
    if message.message_type != "sentiment.batch" {
        return Ok((
            report(
                "not_replayable",
                format!(
                    "messages of type `{}` cannot be replayed yet",
                    message.message_type
                ),
            ),
            ExitCode::from(EXIT_NOT_REPLAYABLE),
        ));
    }
    let Some(payload) = message
        .payload
        .as_ref()
        .filter(|_| !message.payload_truncated)
    else {
        return Ok((
            report(
                "not_replayable",
                "the payload was redacted or truncated (incidents.payload_mode)".to_owned(),
            ),
            ExitCode::from(EXIT_NOT_REPLAYABLE),
        ));
    };
    let payload_file = std::env::temp_dir().join(format!("bulwark-replay-{}.json", incident.id));
    write_private(&payload_file, payload.as_bytes())
        .context("failed to write the replay payload")?;
    let executable = std::env::current_exe().context("failed to find the bulwark executable")?;
    let mut command = tokio::process::Command::new(executable);
    if let Some(config_path) = config_path {
        command.arg("--config").arg(config_path);
    }
    command
        .args(["incident", "replay-sandbox", "--payload"])
        .arg(&payload_file)
        .env("BULWARK_LOG_FORMAT", "pretty")
        .kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command
        .spawn()
        .context("failed to start the replay sandbox")?;
    let outcome = tokio::time::timeout(timeout, child.wait_with_output()).await;
    let _ = std::fs::remove_file(&payload_file);
    let (verdict, detail, code) = match outcome {
        Err(_) => (
            "reproduced",
            format!("the sandbox hung for more than {timeout:?} and was killed"),
            EXIT_REPRODUCED,
        ),
        Ok(Err(error)) => return Err(error).context("failed to wait for the replay sandbox"),
        Ok(Ok(output)) if output.status.success() => (
            "not_reproduced",
            String::from_utf8_lossy(&output.stdout).trim().to_owned(),
            EXIT_NOT_REPRODUCED,
        ),
        Ok(Ok(output)) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last_lines: Vec<&str> = stderr.lines().rev().take(5).collect();
            (
                "reproduced",
                format!(
                    "the sandbox failed ({}): {}",
                    output.status,
                    last_lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
                ),
                EXIT_REPRODUCED,
            )
        }
    };
    Ok((report(verdict, detail), ExitCode::from(code)))
}

/// Writes `bytes` to a new owner-only file: the replay payload holds a caller's texts and sits
/// in the shared temporary directory. A file already at `path` is removed first, and one that
/// appears meanwhile (a planted link) makes the write fail rather than be followed.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

/// The sandbox side: starts a fresh sentiment worker of the configured kind in this process
/// (no database, no HTTP), scores the captured texts once, prints the scores and exits 0; any
/// failure exits non-zero.
pub async fn replay_sandbox(config: &Config, payload_file: &Path) -> anyhow::Result<ExitCode> {
    use bulwark_actors::{
        ScoringChoice, SentimentPool, SentimentPoolParams, SentimentWorkerActor,
        SentimentWorkerParams,
    };
    use bulwark_core::Liveness;
    use bulwark_ml::{BatchQueue, BatchingParams, ChaosKnobs};

    bulwark_supervisors::install_panic_hook();
    let payload: serde_json::Value = serde_json::from_slice(
        &std::fs::read(payload_file).context("failed to read the replay payload")?,
    )
    .context("the replay payload is not JSON")?;
    let texts: Vec<String> = serde_json::from_value(payload["texts"].clone())
        .context("the replay payload has no `texts`")?;
    let env: HashMap<String, String> = std::env::vars().collect();
    let project_root = std::env::current_dir().context("failed to read the working directory")?;
    let engine_plan = crate::engines::plan(config, &env, &project_root);
    let queue = BatchQueue::new(BatchingParams::default());
    let worker_name = format!("replay-sandbox-{}/sentiment-worker-0", std::process::id());
    let (worker, worker_handle) = ractor::Actor::spawn(
        Some(worker_name.clone()),
        SentimentWorkerActor,
        SentimentWorkerParams {
            model_factory: engine_plan.factory.clone(),
            thread_name: "replay-inference".to_owned(),
            queue: queue.clone(),
            liveness: Liveness::default(),
            chaos: ChaosKnobs::from_config(config),
        },
    )
    .await
    .context("failed to start a sentiment worker")?;
    let pool = SentimentPool::new(SentimentPoolParams {
        worker_names: vec![worker_name],
        queue,
        call_timeout: config.sentiment.call_timeout(),
        engine: engine_plan.engines.clone(),
        default_options: bulwark_ml::ScoringOptions::default(),
    });
    let scored = pool.analyze(texts, ScoringChoice::default()).await;
    worker.stop(None);
    let _ = tokio::time::timeout(Duration::from_secs(5), worker_handle).await;
    match scored {
        Ok(scores) => {
            println!("{}", serde_json::to_string(&scores)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("replay failed: {error}");
            Ok(ExitCode::from(EXIT_REPRODUCED))
        }
    }
}
