use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::{Table, Value};

use crate::{Config, SecretRef, env_or_file};

/// The file read when no `--config` is given; it is optional.
pub const DEFAULT_CONFIG_PATH: &str = "config/bulwark.toml";

/// Prefix of generic overrides: `BULWARK__JOBS__CONCURRENCY=4` sets `jobs.concurrency`.
const GENERIC_ENV_PREFIX: &str = "BULWARK__";

/// Well-known variables and the keys they set.
const ENV_ALIASES: &[(&str, &str)] = &[
    ("BULWARK_HTTP_ADDR", "http.addr"),
    ("DATABASE_URL", "database.url"),
    ("AMQP_URL", "amqp.url"),
    ("BULWARK_LOG_FORMAT", "telemetry.log_format"),
    ("BULWARK_LOG", "telemetry.log_level"),
];

/// Keys that hold a secret: their variable may name a file instead (`DATABASE_URL_FILE`), and
/// the file may give a reference instead of the value (`url = { file = "/run/secrets/db" }`).
const SECRET_KEYS: &[&str] = &["database.url", "amqp.url"];

/// Keys still read under an older name: (section, old name, current name). A file may use
/// either name but not both; an environment override under the old name sets the current key,
/// and one under the current name wins over it.
const RENAMED_KEYS: &[(&str, &str, &str)] = &[("scheduler", "tick_ms", "max_wait_ms")];

/// Keys whose values are always strings, even when they look like numbers.
const STRING_KEYS: &[&str] = &[
    "http.addr",
    "database.url",
    "amqp.url",
    "amqp.namespace",
    "telemetry.log_format",
    "telemetry.log_level",
    "telemetry.otlp_endpoint",
    "telemetry.otlp_protocol",
    "telemetry.service_name",
    "jobs.node_id",
    "sentiment.model_dir",
    "sentiment.runtime_path",
    "sentiment.strategy",
];

/// Where the configuration comes from. The environment is passed in, so loading is testable.
#[derive(Debug, Clone, Default)]
pub struct ConfigSources {
    /// `--config FILE`: must exist. `None` reads [`DEFAULT_CONFIG_PATH`] if it exists.
    pub explicit_file: Option<PathBuf>,
    /// Process environment (or a test's).
    pub env: HashMap<String, String>,
}

/// Why the configuration is unusable; every variant names the key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("invalid config file {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("invalid value for environment variable {variable} ({key}): {message}")]
    Env {
        variable: String,
        key: String,
        message: String,
    },
    #[error("invalid config key `{key}`: {message}")]
    Key { key: String, message: String },
}

/// Builds the effective configuration: defaults, then the file, then environment overrides,
/// then [`validate`].
pub fn load(sources: &ConfigSources) -> Result<Config, ConfigError> {
    let mut table = read_file_table(sources.explicit_file.as_deref())?;
    rename_old_keys(&mut table)?;
    resolve_secret_references(&mut table, &sources.env)?;
    apply_env(&mut table, &sources.env)?;
    let deserializer = Value::Table(table);
    let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let key = error.path().to_string();
        ConfigError::Key {
            key,
            message: error.into_inner().to_string(),
        }
    })?;
    validate(&config)?;
    Ok(config)
}

fn read_file_table(explicit_file: Option<&Path>) -> Result<Table, ConfigError> {
    let (path, required) = match explicit_file {
        Some(path) => (path.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if !required && error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Table::new());
        }
        Err(error) => {
            return Err(ConfigError::File {
                path,
                message: error.to_string(),
            });
        }
    };
    text.parse::<Table>().map_err(|error| ConfigError::Syntax {
        path,
        message: error.to_string().trim().to_owned(),
    })
}

/// Moves keys the file sets under an older name to their current name.
fn rename_old_keys(table: &mut Table) -> Result<(), ConfigError> {
    for (section, old_name, current_name) in RENAMED_KEYS {
        let Some(Value::Table(section_table)) = table.get_mut(*section) else {
            continue;
        };
        let Some(value) = section_table.remove(*old_name) else {
            continue;
        };
        if section_table.contains_key(*current_name) {
            return Err(ConfigError::Key {
                key: format!("{section}.{old_name}"),
                message: format!(
                    "renamed to {section}.{current_name}, which is set too; keep only one"
                ),
            });
        }
        section_table.insert((*current_name).to_owned(), value);
    }
    Ok(())
}

/// Returns the current name of a dotted key set under an older name, or `None`.
fn current_key(key: &str) -> Option<String> {
    RENAMED_KEYS
        .iter()
        .find(|(section, old_name, _)| key == format!("{section}.{old_name}"))
        .map(|(section, _, current_name)| format!("{section}.{current_name}"))
}

/// Replaces a secret key's `{ file = ... }` or `{ env = ... }` reference in the file by the
/// value it points to.
fn resolve_secret_references(
    table: &mut Table,
    env: &HashMap<String, String>,
) -> Result<(), ConfigError> {
    for key in SECRET_KEYS {
        let (section, leaf) = key.split_once('.').expect("secret keys are `section.leaf`");
        let Some(Value::Table(section_table)) = table.get_mut(section) else {
            continue;
        };
        let Some(Value::Table(reference)) = section_table.get(leaf) else {
            continue;
        };
        let resolved = SecretRef::deserialize(Value::Table(reference.clone()))
            .map_err(|error| error.to_string())
            .and_then(|secret_ref| secret_ref.resolve(env))
            .map_err(|message| ConfigError::Key {
                key: (*key).to_owned(),
                message,
            })?;
        section_table.insert(leaf.to_owned(), Value::String(resolved));
    }
    Ok(())
}

fn apply_env(table: &mut Table, env: &HashMap<String, String>) -> Result<(), ConfigError> {
    let mut overrides: Vec<(String, String, String)> = Vec::new();
    for (variable, key) in ENV_ALIASES {
        let value_opt = if SECRET_KEYS.contains(key) {
            env_or_file(env, variable).map_err(|message| ConfigError::Env {
                variable: (*variable).to_owned(),
                key: (*key).to_owned(),
                message,
            })?
        } else {
            env.get(*variable).cloned()
        };
        if let Some(value) = value_opt {
            overrides.push(((*variable).to_owned(), (*key).to_owned(), value));
        }
    }
    let mut generic: Vec<_> = env
        .iter()
        .filter_map(|(variable, value)| {
            let path = variable.strip_prefix(GENERIC_ENV_PREFIX)?;
            let key = path
                .split("__")
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
                .join(".");
            Some((variable.clone(), key, value.clone()))
        })
        .collect();
    // Old names first, so the current name of the same key is applied after them and wins.
    generic.sort_by_key(|(variable, key, _)| (current_key(key).is_none(), variable.clone()));
    let generic = generic.into_iter().map(|(variable, key, value)| {
        let key = current_key(&key).unwrap_or(key);
        (variable, key, value)
    });
    overrides.extend(generic);

    for (variable, key, raw) in overrides {
        let value = env_value(&key, &raw);
        set_path(table, &key, value).map_err(|message| ConfigError::Env {
            variable: variable.clone(),
            key: key.clone(),
            message,
        })?;
    }
    Ok(())
}

/// Reads an environment value as a TOML scalar (`42`, `true`, `1.5`), or as a string.
fn env_value(key: &str, raw: &str) -> Value {
    if STRING_KEYS.contains(&key) {
        return Value::String(raw.to_owned());
    }
    let scalar = format!("v = {raw}");
    match scalar
        .parse::<Table>()
        .ok()
        .and_then(|mut table| table.remove("v"))
    {
        Some(value @ (Value::Integer(_) | Value::Float(_) | Value::Boolean(_))) => value,
        _ => Value::String(raw.to_owned()),
    }
}

fn set_path(table: &mut Table, key: &str, value: Value) -> Result<(), String> {
    let mut segments: Vec<&str> = key.split('.').collect();
    let Some(leaf) = segments.pop() else {
        return Err("empty key".to_owned());
    };
    let mut current = table;
    for segment in segments {
        let entry = current
            .entry(segment)
            .or_insert_with(|| Value::Table(Table::new()));
        let Value::Table(next) = entry else {
            return Err(format!("`{segment}` is not a section"));
        };
        current = next;
    }
    current.insert(leaf.to_owned(), value);
    Ok(())
}

/// Checks values that parse but cannot work. Pure: it looks at nothing but `config`.
pub fn validate(config: &Config) -> Result<(), ConfigError> {
    let invalid = |key: &str, message: String| {
        Err(ConfigError::Key {
            key: key.to_owned(),
            message,
        })
    };
    if let Err(error) = config.http.addr.parse::<SocketAddr>() {
        return invalid(
            "http.addr",
            format!("`{}` is not a socket address: {error}", config.http.addr),
        );
    }
    if config.http.max_body_bytes < 1024 {
        return invalid("http.max_body_bytes", "must be at least 1024".to_owned());
    }
    if let Err((key, message)) = crate::http::validate_http_transport(
        &config.http.cors_allowed_origins,
        config.http.tls.as_ref(),
    ) {
        return invalid(&key, message);
    }
    match config.database.url.scheme() {
        "sqlite" | "postgres" | "postgresql" => {}
        other => {
            return invalid(
                "database.url",
                format!("scheme `{other}` is not supported, use sqlite:// or postgres://"),
            );
        }
    }
    if let Err((key, message)) = crate::amqp::validate_amqp(&config.amqp) {
        return invalid(key, message);
    }
    if let Err((key, message)) = crate::incidents::validate_chaos(&config.chaos) {
        return invalid(key, message);
    }
    if !matches!(
        config.incidents.payload_mode.as_str(),
        "full" | "truncate" | "redact"
    ) {
        return invalid(
            "incidents.payload_mode",
            format!(
                "`{}` is not one of full, truncate, redact",
                config.incidents.payload_mode
            ),
        );
    }
    if let Err((key, message)) = crate::audits::validate_audits(&config.audits) {
        return invalid(key, message);
    }
    if let Err((key, message)) =
        crate::scheduling::validate_scheduling(&config.scheduler, &config.dead_letters)
    {
        return invalid(key, message);
    }
    if let Err((key, message)) = crate::scheduling::validate_retention(&config.jobs.retention) {
        return invalid(key, message);
    }
    if let Err((key, message)) = crate::model::validate_kinds(&config.jobs.kinds) {
        return invalid(&key, message);
    }
    if let Err((key, message)) = crate::validate_providers(&config.providers) {
        return invalid(&key, message);
    }
    if let Err((key, message)) = crate::auth::validate_auth(&config.auth) {
        return invalid(&key, message);
    }
    let positive: [(&str, u64); 15] = [
        (
            "database.max_connections",
            config.database.max_connections.into(),
        ),
        ("jobs.concurrency", config.jobs.concurrency as u64),
        ("jobs.poll_interval_ms", config.jobs.poll_interval_ms),
        ("jobs.lease_ms", config.jobs.lease_ms),
        ("jobs.max_attempts", config.jobs.max_attempts.into()),
        ("jobs.control_interval_ms", config.jobs.control_interval_ms),
        ("sentiment.max_queued", config.sentiment.max_queued as u64),
        (
            "sentiment.call_timeout_ms",
            config.sentiment.call_timeout_ms,
        ),
        (
            "sentiment.max_batch_texts",
            config.sentiment.max_batch_texts as u64,
        ),
        (
            "sentiment.max_batch_tokens",
            config.sentiment.max_batch_tokens as u64,
        ),
        ("supervision.within_ms", config.supervision.within_ms),
        (
            "supervision.root_max_restarts",
            config.supervision.root_max_restarts.into(),
        ),
        (
            "supervision.root_within_ms",
            config.supervision.root_within_ms,
        ),
        (
            "supervision.hang_timeout_ms",
            config.supervision.hang_timeout_ms,
        ),
        ("supervision.heartbeat_ms", config.supervision.heartbeat_ms),
    ];
    for (key, value) in positive {
        if value == 0 {
            return invalid(key, "must be greater than 0".to_owned());
        }
    }
    if config.shutdown.timeout_ms < 1_000 {
        return invalid(
            "shutdown.timeout_ms",
            "must be at least 1000 (the drain and the teardown after it share it)".to_owned(),
        );
    }
    if config.jobs.lease_ms < 1_000 {
        return invalid(
            "jobs.lease_ms",
            "must be at least 1000 (leases are renewed every third of it)".to_owned(),
        );
    }
    if !(50..=60_000).contains(&config.jobs.node_heartbeat_ms) {
        return invalid(
            "jobs.node_heartbeat_ms",
            format!("must be 50 to 60000, got {}", config.jobs.node_heartbeat_ms),
        );
    }
    let jobs = &config.jobs;
    if jobs.node_dead_after_ms < 3 * jobs.node_heartbeat_ms
        || jobs.node_dead_after_ms >= jobs.lease_ms
    {
        return invalid(
            "jobs.node_dead_after_ms",
            format!(
                "must be at least three heartbeats ({} ms) and less than jobs.lease_ms ({} ms), got {}",
                3 * jobs.node_heartbeat_ms,
                jobs.lease_ms,
                jobs.node_dead_after_ms
            ),
        );
    }
    if !matches!(
        config.sentiment.strategy.as_str(),
        "primary" | "ensemble" | "consensus"
    ) {
        return invalid(
            "sentiment.strategy",
            format!(
                "`{}` is not primary, ensemble or consensus",
                config.sentiment.strategy
            ),
        );
    }
    for (key, value) in [
        (
            "sentiment.neutral_threshold",
            config.sentiment.neutral_threshold,
        ),
        (
            "sentiment.ensemble_onnx_weight",
            config.sentiment.ensemble_onnx_weight,
        ),
    ] {
        if !(0.0..=1.0).contains(&value) {
            return invalid(key, format!("must be between 0 and 1, got {value}"));
        }
    }
    if config.sentiment.intra_op_threads == 0 || config.sentiment.intra_op_threads > 64 {
        return invalid(
            "sentiment.intra_op_threads",
            "must be between 1 and 64".to_owned(),
        );
    }
    if config.sentiment.workers > 256 {
        return invalid("sentiment.workers", "must be at most 256".to_owned());
    }
    if config
        .telemetry
        .log_level
        .parse::<LogDirectiveCheck>()
        .is_err()
    {
        return invalid("telemetry.log_level", "must not be empty".to_owned());
    }
    let telemetry = &config.telemetry;
    if !(0.0..=1.0).contains(&telemetry.trace_sample_ratio) {
        return invalid(
            "telemetry.trace_sample_ratio",
            "must be between 0 and 1".to_owned(),
        );
    }
    if let Some(endpoint) = &telemetry.otlp_endpoint
        && !endpoint.starts_with("http://")
    {
        return invalid(
            "telemetry.otlp_endpoint",
            format!(
                "must be an http:// URL (a local collector; the exporter speaks no TLS), not `{endpoint}`"
            ),
        );
    }
    if telemetry.service_name.trim().is_empty() {
        return invalid("telemetry.service_name", "must not be empty".to_owned());
    }
    Ok(())
}

/// A minimal syntactic check of a log filter; the binary's subscriber parses it fully.
struct LogDirectiveCheck;

impl std::str::FromStr for LogDirectiveCheck {
    type Err = ();

    fn from_str(directive: &str) -> Result<Self, Self::Err> {
        if directive.trim().is_empty() {
            Err(())
        } else {
            Ok(LogDirectiveCheck)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LogFormat;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    fn write_config(contents: &str) -> (tempfile_path::TempPath, PathBuf) {
        let temp = tempfile_path::TempPath::new(contents);
        let path = temp.path.clone();
        (temp, path)
    }

    /// Minimal temp-file helper so the config crate needs no extra dependency.
    mod tempfile_path {
        use std::path::PathBuf;
        use std::sync::atomic::{AtomicU32, Ordering};

        static COUNTER: AtomicU32 = AtomicU32::new(0);

        pub struct TempPath {
            pub path: PathBuf,
        }

        impl TempPath {
            pub fn new(contents: &str) -> Self {
                let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
                let path = std::env::temp_dir().join(format!(
                    "bulwark-config-test-{}-{unique}.toml",
                    std::process::id()
                ));
                std::fs::write(&path, contents).expect("write temp config");
                TempPath { path }
            }
        }

        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }

    /// Proves an empty environment and no file give the documented defaults.
    #[test]
    fn defaults_apply_without_file_or_env() {
        let config = load(&ConfigSources::default()).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.http.addr, "127.0.0.1:8080");
        assert_eq!(config.database.url.expose(), "sqlite://data/bulwark.db");
        assert!(config.amqp.url.is_none());
    }

    /// Proves the layering order: file over defaults, environment over file.
    #[test]
    fn env_overrides_file_which_overrides_defaults() {
        let (_temp, path) = write_config(
            "[http]\naddr = \"0.0.0.0:9000\"\n[jobs]\nconcurrency = 3\nlease_ms = 5000\n",
        );
        let sources = ConfigSources {
            explicit_file: Some(path),
            env: env(&[
                ("BULWARK_HTTP_ADDR", "127.0.0.1:0"),
                ("BULWARK__JOBS__CONCURRENCY", "7"),
                ("DATABASE_URL", "postgres://u:p@localhost/test"),
                ("BULWARK_LOG_FORMAT", "pretty"),
            ]),
        };
        let config = load(&sources).unwrap();
        assert_eq!(config.http.addr, "127.0.0.1:0");
        assert_eq!(config.jobs.concurrency, 7);
        assert_eq!(config.jobs.lease_ms, 5000);
        assert_eq!(
            config.database.url.expose(),
            "postgres://u:p@localhost/test"
        );
        assert_eq!(config.telemetry.log_format, LogFormat::Pretty);
    }

    /// Proves the connection URLs can come from files, as Docker and Kubernetes secrets mount
    /// them: `DATABASE_URL_FILE` and `AMQP_URL_FILE`, or a `{ file = ... }` reference in the
    /// config file, which the variables still override.
    #[test]
    fn secret_urls_come_from_files() {
        let (_database_file, database_path) =
            write_config("postgres://app:hunter2@db.internal/jobs\n");
        let (_broker_file, broker_path) = write_config("amqp://app:hunter2@broker/%2f\n");
        let config = load(&ConfigSources {
            explicit_file: None,
            env: env(&[
                ("DATABASE_URL_FILE", database_path.to_str().unwrap()),
                ("AMQP_URL_FILE", broker_path.to_str().unwrap()),
            ]),
        })
        .unwrap();
        assert_eq!(
            config.database.url.expose(),
            "postgres://app:hunter2@db.internal/jobs"
        );
        assert_eq!(
            config.amqp.url.as_ref().unwrap().expose(),
            "amqp://app:hunter2@broker/%2f"
        );

        let (_config_file, config_path) = write_config(&format!(
            "[database]\nurl = {{ file = \"{}\" }}\n",
            database_path.display()
        ));
        let from_reference = load(&ConfigSources {
            explicit_file: Some(config_path.clone()),
            env: HashMap::new(),
        })
        .unwrap();
        assert_eq!(
            from_reference.database.url.expose(),
            "postgres://app:hunter2@db.internal/jobs"
        );
        let overridden = load(&ConfigSources {
            explicit_file: Some(config_path),
            env: env(&[("DATABASE_URL", "postgres://localhost/test")]),
        })
        .unwrap();
        assert_eq!(
            overridden.database.url.expose(),
            "postgres://localhost/test"
        );
    }

    /// Proves a secret file that cannot be used fails naming the variable or key, and never
    /// shows the secret: both forms set, a missing file, an empty file, a bad reference.
    #[test]
    fn unusable_secret_files_are_named() {
        let (_database_file, database_path) = write_config("postgres://app:hunter2@db/jobs");
        let (_empty_file, empty_path) = write_config("  \n");
        let database_path = database_path.to_str().unwrap();
        let cases = [
            (
                env(&[
                    ("DATABASE_URL", "postgres://app:hunter2@db/jobs"),
                    ("DATABASE_URL_FILE", database_path),
                ]),
                None,
                "both DATABASE_URL and DATABASE_URL_FILE",
            ),
            (
                env(&[("AMQP_URL_FILE", "/nonexistent/bulwark-amqp-url")]),
                None,
                "AMQP_URL_FILE: failed to read /nonexistent/bulwark-amqp-url",
            ),
            (
                env(&[("DATABASE_URL_FILE", empty_path.to_str().unwrap())]),
                None,
                "is empty",
            ),
            (
                HashMap::new(),
                Some("[database]\nurl = { path = \"/run/secrets/db\" }\n"),
                "database.url",
            ),
            (
                HashMap::new(),
                Some("[amqp]\nurl = { env = \"BULWARK_TEST_UNSET_AMQP\" }\n"),
                "BULWARK_TEST_UNSET_AMQP_FILE) is not set",
            ),
        ];
        for (variables, file_opt, expected) in cases {
            let temp_opt = file_opt.map(write_config);
            let message = load(&ConfigSources {
                explicit_file: temp_opt.as_ref().map(|(_, path)| path.clone()),
                env: variables,
            })
            .unwrap_err()
            .to_string();
            assert!(message.contains(expected), "{message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
    }

    /// Proves an unknown key in the file is rejected with its full path.
    #[test]
    fn unknown_file_key_is_named() {
        let (_temp, path) = write_config("[jobs]\nconcurency = 3\n");
        let error = load(&ConfigSources {
            explicit_file: Some(path),
            env: HashMap::new(),
        })
        .unwrap_err();
        let message = error.to_string();
        assert!(message.contains("jobs.concurency"), "{message}");
    }

    /// Proves an unknown generic environment override is rejected, naming the key.
    #[test]
    fn unknown_env_key_is_named() {
        let sources = ConfigSources {
            explicit_file: None,
            env: env(&[("BULWARK__JOBS__NOPE", "1")]),
        };
        let message = load(&sources).unwrap_err().to_string();
        assert!(message.contains("jobs.nope"), "{message}");
    }

    /// Proves bad values fail with the key named, for parse and validation errors alike.
    #[test]
    fn bad_values_name_the_key() {
        let cases = [
            ("BULWARK_HTTP_ADDR", "not-an-addr", "http.addr"),
            ("DATABASE_URL", "mysql://localhost/db", "database.url"),
            ("AMQP_URL", "http://broker", "amqp.url"),
            ("BULWARK__JOBS__CONCURRENCY", "0", "jobs.concurrency"),
            ("BULWARK__JOBS__CONCURRENCY", "many", "jobs.concurrency"),
            ("BULWARK_LOG_FORMAT", "xml", "telemetry.log_format"),
        ];
        for (variable, value, key) in cases {
            let sources = ConfigSources {
                explicit_file: None,
                env: env(&[(variable, value)]),
            };
            let message = load(&sources).unwrap_err().to_string();
            assert!(message.contains(key), "{variable}={value}: {message}");
        }
    }

    /// Proves a config written for the scheduler's fixed tick still loads: `tick_ms` sets
    /// `scheduler.max_wait_ms` from a file and from the environment, an old-name override beats
    /// a file that uses the new name (as the shipped one does), the new name beats the old in
    /// the environment, and a file setting both is refused naming the old key.
    #[test]
    fn scheduler_tick_ms_is_read_as_max_wait_ms() {
        let load_with = |file: &str, pairs: &[(&str, &str)]| {
            let (_temp, path) = write_config(file);
            load(&ConfigSources {
                explicit_file: Some(path),
                env: env(pairs),
            })
        };
        let from_file = load_with("[scheduler]\ntick_ms = 400\n", &[]).unwrap();
        assert_eq!(from_file.scheduler.max_wait_ms, 400);
        let over_new_name = load_with(
            "[scheduler]\nmax_wait_ms = 250\n",
            &[("BULWARK__SCHEDULER__TICK_MS", "20")],
        )
        .unwrap();
        assert_eq!(over_new_name.scheduler.max_wait_ms, 20);
        let both_in_env = load_with(
            "",
            &[
                ("BULWARK__SCHEDULER__TICK_MS", "20"),
                ("BULWARK__SCHEDULER__MAX_WAIT_MS", "30"),
            ],
        )
        .unwrap();
        assert_eq!(both_in_env.scheduler.max_wait_ms, 30);
        let both_in_file =
            load_with("[scheduler]\ntick_ms = 400\nmax_wait_ms = 250\n", &[]).unwrap_err();
        let message = both_in_file.to_string();
        assert!(message.contains("scheduler.tick_ms"), "{message}");
        assert!(message.contains("scheduler.max_wait_ms"), "{message}");
    }

    /// Proves a missing explicit file is an error, while the default path is optional.
    #[test]
    fn explicit_file_must_exist() {
        let sources = ConfigSources {
            explicit_file: Some(PathBuf::from("/nonexistent/bulwark.toml")),
            env: HashMap::new(),
        };
        assert!(matches!(load(&sources), Err(ConfigError::File { .. })));
    }

    /// Proves a TOML syntax error names the file.
    #[test]
    fn syntax_error_names_the_file() {
        let (_temp, path) = write_config("[http\naddr = 1");
        let error = load(&ConfigSources {
            explicit_file: Some(path.clone()),
            env: HashMap::new(),
        })
        .unwrap_err();
        assert!(
            error.to_string().contains(&path.display().to_string()),
            "{error}"
        );
    }
}
