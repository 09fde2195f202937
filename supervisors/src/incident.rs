//! Incident files: one JSON document per actor failure (panic, error, kill after a hang) or
//! unhandled API error, written under a bounded directory by a writer task behind a bounded
//! channel, so reporting never blocks and never fails the actor system.
//!
//! The format is `docs/schemas/incident_v1.schema.json`; [`Incident`] is its Rust shape.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bulwark_core::{HandledMessage, format_rfc3339_ms, now_ms};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::metrics::{IncidentDropped, IncidentRecorded, IncidentWriteFailed};

/// The `schema_version` of the documents this module writes.
pub const SCHEMA_VERSION: u32 = 1;
/// How many log lines a dump carries.
pub const LOG_LINES_PER_INCIDENT: usize = 100;
const REDACTED: &str = "[redacted]";
/// Words in an environment variable's name that make its value a secret.
const SECRET_NAME_PARTS: &[&str] = &[
    "KEY",
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "CREDENTIAL",
    "AUTH",
    "COOKIE",
    "SESSION",
    "PRIVATE",
];

static SINKS: Mutex<Option<HashMap<String, IncidentSink>>> = Mutex::new(None);

/// What failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    Panic,
    Error,
    /// Killed by its supervisor after staying busy past the hang timeout.
    Hang,
    /// An HTTP request answered `500 INTERNAL_ERROR`.
    ApiError,
}

impl IncidentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentKind::Panic => "panic",
            IncidentKind::Error => "error",
            IncidentKind::Hang => "hang",
            IncidentKind::ApiError => "api_error",
        }
    }
}

/// How much of a handled message's payload reaches the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PayloadMode {
    /// The payload as it was (replay needs it whole).
    Full,
    /// At most `payload_max_chars` characters.
    #[default]
    Truncate,
    /// Only its length.
    Redact,
}

/// Where and how incidents are written.
#[derive(Debug, Clone)]
pub struct IncidentSettings {
    pub dir: PathBuf,
    /// Oldest files are removed beyond this many.
    pub max_files: usize,
    /// Oldest files are removed beyond this many bytes in total.
    pub max_bytes: u64,
    pub payload_mode: PayloadMode,
    pub payload_max_chars: usize,
    /// Environment variables a dump may show; secret-looking values are redacted anyway.
    pub env_allow: Vec<String>,
    /// Incidents waiting for the writer; beyond this they are dropped and counted.
    pub queue_capacity: usize,
    pub node: String,
}

/// The last log lines of the process, filled by a tracing layer the binary installs and read
/// when an incident is reported.
#[derive(Clone)]
pub struct RecentLogs {
    lines: Arc<Mutex<VecDeque<String>>>,
    capacity: usize,
}

impl fmt::Debug for RecentLogs {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("RecentLogs")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl RecentLogs {
    pub fn new(capacity: usize) -> Self {
        RecentLogs {
            lines: Arc::new(Mutex::new(VecDeque::with_capacity(capacity))),
            capacity,
        }
    }

    /// Appends a line, forgetting the oldest beyond the capacity.
    pub fn push(&self, line: String) {
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() == self.capacity {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// Returns the lines, oldest first.
    pub fn snapshot(&self) -> Vec<String> {
        let lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        lines.iter().cloned().collect()
    }
}

/// The supervisor of a failed actor, as the dump shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorInfo {
    pub name: String,
    pub strategy: String,
    /// Restarts of the failed child by this supervisor before this failure.
    pub restart_count: u64,
}

/// What the failure site knows; [`IncidentSink::report`] adds the process, logs and environment.
#[derive(Debug, Clone)]
pub struct IncidentReport {
    pub kind: IncidentKind,
    /// A fixed name (`sentiment`, `jobs`, `api`, ...), the metric's label.
    pub subsystem: String,
    /// Path in the supervision tree, e.g. `root/sentiment/sentiment-worker-1`.
    pub actor_path: String,
    pub supervisor: Option<SupervisorInfo>,
    pub message: String,
    pub backtrace: Option<String>,
    pub handled: Option<HandledMessage>,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
}

/// One incident file (`incident_v1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub schema_version: u32,
    pub id: String,
    /// RFC 3339, UTC.
    pub time: String,
    pub node: String,
    pub process: ProcessInfo,
    pub actor: ActorInfo,
    pub failure: FailureInfo,
    pub message: Option<MessageInfo>,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
    pub logs: Vec<String>,
    pub environment: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub version: String,
    pub uptime_seconds: u64,
    pub memory: MemoryInfo,
}

/// From `/proc/self/status`, in kilobytes; `None` where the kernel does not say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryInfo {
    pub rss_kb: Option<u64>,
    pub peak_rss_kb: Option<u64>,
    pub virtual_kb: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorInfo {
    pub path: String,
    pub subsystem: String,
    pub supervisor: Option<SupervisorInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureInfo {
    pub kind: IncidentKind,
    pub message: String,
    pub backtrace: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageInfo {
    #[serde(rename = "type")]
    pub message_type: String,
    pub summary: String,
    pub payload_mode: PayloadMode,
    /// The payload after redaction or truncation; `None` when redacted or absent.
    pub payload: Option<String>,
    pub payload_chars: usize,
    pub payload_truncated: bool,
}

/// What the writer started with.
#[derive(Debug, Clone)]
pub struct IncidentWriterParams {
    pub settings: IncidentSettings,
    pub logs: RecentLogs,
    /// The process environment; only allow-listed names, redacted, reach a dump.
    pub env: HashMap<String, String>,
}

/// Counts of what the writer did, for tests and `/health`.
#[derive(Debug, Default)]
pub struct IncidentStats {
    pub written: AtomicU64,
    pub dropped: AtomicU64,
    pub write_failures: AtomicU64,
}

/// Reports incidents to the writer task without waiting; cheap to clone.
#[derive(Clone)]
pub struct IncidentSink {
    incidents_tx: mpsc::Sender<Incident>,
    settings: Arc<IncidentSettings>,
    logs: RecentLogs,
    environment: Arc<BTreeMap<String, String>>,
    started_at: Instant,
    stats: Arc<IncidentStats>,
}

impl fmt::Debug for IncidentSink {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("IncidentSink")
            .field("dir", &self.settings.dir)
            .finish_non_exhaustive()
    }
}

impl IncidentSink {
    /// Starts the writer task and returns the sink that feeds it. The task ends when every
    /// clone of the sink is dropped (after writing what was queued).
    pub fn start(params: IncidentWriterParams) -> (IncidentSink, JoinHandle<()>) {
        let IncidentWriterParams {
            settings,
            logs,
            env,
        } = params;
        let (incidents_tx, incidents_rx) = mpsc::channel(settings.queue_capacity.max(1));
        let environment = Arc::new(reduce_environment(&env, &settings.env_allow));
        let settings = Arc::new(settings);
        let stats = Arc::new(IncidentStats::default());
        let writer = tokio::spawn(write_incidents(
            incidents_rx,
            settings.clone(),
            stats.clone(),
        ));
        let sink = IncidentSink {
            incidents_tx,
            settings,
            logs,
            environment,
            started_at: Instant::now(),
            stats,
        };
        (sink, writer)
    }

    pub fn dir(&self) -> &Path {
        &self.settings.dir
    }

    pub fn stats(&self) -> &IncidentStats {
        &self.stats
    }

    /// Queues an incident for writing and returns its id; never waits. A full queue drops it
    /// (logged and counted).
    pub fn report(&self, report: IncidentReport) -> String {
        let incident = self.build(report);
        let id = incident.id.clone();
        IncidentRecorded {
            kind: incident.failure.kind,
            subsystem: &incident.actor.subsystem,
        }
        .emit();
        if self.incidents_tx.try_send(incident).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            IncidentDropped { id: &id }.emit();
        }
        id
    }

    fn build(&self, report: IncidentReport) -> Incident {
        let message = report
            .handled
            .as_ref()
            .map(|handled| self.describe_message(handled));
        let request_id = report.request_id.or_else(|| {
            report
                .handled
                .as_ref()
                .and_then(|handled| handled.request_id.clone())
        });
        let trace_id = report.trace_id.or_else(|| {
            report
                .handled
                .as_ref()
                .and_then(|handled| handled.trace_id.clone())
        });
        Incident {
            schema_version: SCHEMA_VERSION,
            id: uuid::Uuid::now_v7().to_string(),
            time: format_rfc3339_ms(now_ms()),
            node: self.settings.node.clone(),
            process: ProcessInfo {
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                uptime_seconds: self.started_at.elapsed().as_secs(),
                memory: read_memory(),
            },
            actor: ActorInfo {
                path: report.actor_path,
                subsystem: report.subsystem,
                supervisor: report.supervisor,
            },
            failure: FailureInfo {
                kind: report.kind,
                message: report.message,
                backtrace: report.backtrace,
            },
            message,
            request_id,
            trace_id,
            logs: self.logs.snapshot(),
            environment: (*self.environment).clone(),
        }
    }

    fn describe_message(&self, handled: &HandledMessage) -> MessageInfo {
        let mode = self.settings.payload_mode;
        let payload_chars = handled
            .payload
            .as_ref()
            .map_or(0, |payload| payload.chars().count());
        let (payload, payload_truncated) = match (&handled.payload, mode) {
            (None, _) | (Some(_), PayloadMode::Redact) => (None, false),
            (Some(payload), PayloadMode::Full) => (Some(payload.clone()), false),
            (Some(payload), PayloadMode::Truncate) => {
                let max = self.settings.payload_max_chars;
                (
                    Some(payload.chars().take(max).collect()),
                    payload_chars > max,
                )
            }
        };
        MessageInfo {
            message_type: handled.message_type.clone(),
            summary: handled.summary.clone(),
            payload_mode: mode,
            payload,
            payload_chars,
            payload_truncated,
        }
    }

    /// Makes this sink the one reported to by actors whose registered names start with
    /// `instance/` (supervisors find it by name, as callers find actors).
    pub fn register(&self, instance: &str) {
        let mut sinks = SINKS.lock().unwrap_or_else(PoisonError::into_inner);
        sinks
            .get_or_insert_with(HashMap::new)
            .insert(instance.to_owned(), self.clone());
    }

    pub fn unregister(instance: &str) {
        let mut sinks = SINKS.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sinks) = sinks.as_mut() {
            sinks.remove(instance);
        }
    }

    /// Returns the sink registered for `instance`.
    pub fn for_instance(instance: &str) -> Option<IncidentSink> {
        let sinks = SINKS.lock().unwrap_or_else(PoisonError::into_inner);
        sinks.as_ref()?.get(instance).cloned()
    }
}

/// Returns the file name of an incident: `incident_<timestamp>_<actor>_<pid>[_<request_id>].json`.
pub fn file_name(incident: &Incident) -> String {
    let timestamp: String = incident
        .time
        .chars()
        .filter(|character| character.is_ascii_alphanumeric() || *character == '.')
        .collect();
    let actor = sanitize(incident.actor.path.rsplit('/').next().unwrap_or("actor"));
    let mut name = format!(
        "incident_{timestamp}_{actor}_{pid}",
        pid = incident.process.pid
    );
    if let Some(request_id) = &incident.request_id {
        name.push('_');
        name.push_str(&sanitize(request_id));
    }
    name.push_str(".json");
    name
}

fn sanitize(text: &str) -> String {
    text.chars()
        .take(64)
        .map(|character| {
            if character.is_ascii_alphanumeric() || character == '-' {
                character
            } else {
                '-'
            }
        })
        .collect()
}

/// Returns the allow-listed variables, with secret values redacted: by name (`*_KEY`,
/// `*TOKEN*`, ...) or, for URLs, the password part.
pub fn reduce_environment(
    env: &HashMap<String, String>,
    allow: &[String],
) -> BTreeMap<String, String> {
    allow
        .iter()
        .filter_map(|name| env.get(name).map(|value| (name, value)))
        .map(|(name, value)| (name.clone(), redact_value(name, value)))
        .collect()
}

fn redact_value(name: &str, value: &str) -> String {
    let upper = name.to_ascii_uppercase();
    if SECRET_NAME_PARTS.iter().any(|part| upper.contains(part)) {
        return REDACTED.to_owned();
    }
    // A URL keeps its scheme, user, host and path, never a password in its userinfo or a
    // secret-looking query parameter (`sslpassword=`, `token=`...): the config crate's rule.
    if value.contains("://") {
        return bulwark_config::SecretUrl::new(value).redacted();
    }
    value.to_owned()
}

async fn write_incidents(
    mut incidents_rx: mpsc::Receiver<Incident>,
    settings: Arc<IncidentSettings>,
    stats: Arc<IncidentStats>,
) {
    while let Some(incident) = incidents_rx.recv().await {
        let settings = settings.clone();
        let written =
            tokio::task::spawn_blocking(move || write_and_prune(&settings, &incident)).await;
        match written {
            Ok(Ok(path)) => {
                stats.written.fetch_add(1, Ordering::Relaxed);
                debug!(path = %path.display(), "incident written");
            }
            Ok(Err(error)) => {
                stats.write_failures.fetch_add(1, Ordering::Relaxed);
                IncidentWriteFailed { error: &error }.emit();
            }
            Err(join_error) => {
                stats.write_failures.fetch_add(1, Ordering::Relaxed);
                IncidentWriteFailed {
                    error: &std::io::Error::other(join_error.to_string()),
                }
                .emit();
            }
        }
    }
}

/// Mode of the incident directory: incidents hold payloads, log lines and backtraces, so only
/// the node's own user may list or read them.
const DIR_MODE: u32 = 0o700;
/// Mode of each incident file.
const FILE_MODE: u32 = 0o600;

/// Creates the incident directory (and any missing parent) owner-only. A directory that
/// already exists keeps its mode, since it may be shared (`/tmp`, `/var/log`) and changing it
/// could break other programs; one that others can read or enter is reported instead.
fn ensure_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        warn!(
            dir = %dir.display(),
            mode = format!("{:o}", mode & 0o7777),
            "incident directory is open to other users; chmod 700 it"
        );
    }
    Ok(())
}

/// Writes the file (through a temporary name, so readers never see half a document), then
/// removes the oldest files beyond the bounds. Directory and file are owner-only.
fn write_and_prune(settings: &IncidentSettings, incident: &Incident) -> std::io::Result<PathBuf> {
    ensure_private_dir(&settings.dir)?;
    let name = file_name(incident);
    let path = settings.dir.join(&name);
    let temporary = settings.dir.join(format!(".{name}.tmp"));
    let json = serde_json::to_vec_pretty(incident).map_err(std::io::Error::other)?;
    // A leftover temporary could carry an older, wider mode: start from a new file.
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(&temporary)?;
    let written = file.write_all(&json).and_then(|()| file.sync_data());
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(error);
    }
    std::fs::rename(&temporary, &path)?;
    if let Err(error) = prune(settings) {
        warn!(%error, dir = %settings.dir.display(), "failed to prune the incident directory");
    }
    Ok(path)
}

/// Removes the oldest incident files until at most `max_files` and `max_bytes` remain.
pub fn prune(settings: &IncidentSettings) -> std::io::Result<usize> {
    let mut files = list_files(&settings.dir)?;
    let mut total_bytes: u64 = files.iter().map(|(_, bytes)| bytes).sum();
    let mut num_removed = 0;
    // Names start with the timestamp, so name order is age order.
    files.sort();
    let mut remaining = files.len();
    for (path, bytes) in files {
        if remaining <= settings.max_files && total_bytes <= settings.max_bytes {
            break;
        }
        std::fs::remove_file(&path)?;
        remaining -= 1;
        total_bytes = total_bytes.saturating_sub(bytes);
        num_removed += 1;
    }
    Ok(num_removed)
}

/// Returns the incident files in `dir` with their sizes; an absent directory has none.
pub fn list_files(dir: &Path) -> std::io::Result<Vec<(PathBuf, u64)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("incident_") && name.ends_with(".json") {
            files.push((entry.path(), entry.metadata()?.len()));
        }
    }
    Ok(files)
}

/// Reads every incident in `dir`, newest first; unreadable files are skipped with a warning.
pub fn read_all(dir: &Path) -> std::io::Result<Vec<Incident>> {
    let mut files = list_files(dir)?;
    files.sort();
    files.reverse();
    let mut incidents = Vec::with_capacity(files.len());
    for (path, _) in files {
        match read_one(&path) {
            Ok(incident) => incidents.push(incident),
            Err(error) => warn!(%error, path = %path.display(), "skipping unreadable incident"),
        }
    }
    Ok(incidents)
}

/// Reads one incident file.
pub fn read_one(path: &Path) -> std::io::Result<Incident> {
    let bytes = std::fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(std::io::Error::other)
}

fn read_memory() -> MemoryInfo {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return MemoryInfo::default();
    };
    let field = |key: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|number| number.parse().ok())
    };
    MemoryInfo {
        rss_kb: field("VmRSS:"),
        peak_rss_kb: field("VmHWM:"),
        virtual_kb: field("VmSize:"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves only allow-listed variables survive, secret names are redacted and URL
    /// passwords are removed.
    #[test]
    fn environment_is_allow_listed_and_redacted() {
        let env: HashMap<String, String> = [
            ("PATH", "/usr/bin"),
            ("OPENAI_API_KEY", "sk-live-123"),
            ("DATABASE_URL", "postgres://app:hunter2@db:5432/bulwark"),
            ("NOT_ALLOWED", "visible?"),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
        let allow = ["PATH", "OPENAI_API_KEY", "DATABASE_URL", "ABSENT"].map(str::to_owned);
        let reduced = reduce_environment(&env, &allow);
        assert_eq!(reduced.len(), 3);
        assert_eq!(reduced["PATH"], "/usr/bin");
        assert_eq!(reduced["OPENAI_API_KEY"], REDACTED);
        assert_eq!(
            reduced["DATABASE_URL"],
            "postgres://app:***@db:5432/bulwark"
        );
        assert!(!reduced.contains_key("NOT_ALLOWED"));
    }

    /// Proves the ring keeps only the newest lines, oldest first.
    #[test]
    fn recent_logs_keep_the_newest() {
        let logs = RecentLogs::new(3);
        for line in 0..5 {
            logs.push(line.to_string());
        }
        assert_eq!(logs.snapshot(), vec!["2", "3", "4"]);
    }
}
