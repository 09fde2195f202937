//! The `[incidents]`, `[chaos]` and `[ops]` sections: crash dumps, deliberate faults for game
//! days, and operator controls.

use serde::{Deserialize, Serialize};

/// Incident files written on every actor failure and unhandled API error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IncidentsConfig {
    pub dir: String,
    /// Oldest files are removed beyond this many.
    pub max_files: usize,
    /// Oldest files are removed beyond this many bytes in total.
    pub max_bytes: u64,
    /// `full`, `truncate` or `redact`: how much of the handled message's payload a file shows.
    pub payload_mode: String,
    pub payload_max_chars: usize,
    /// Environment variables a file may show; secret-looking values are redacted anyway.
    pub env_allow: Vec<String>,
    /// Incidents waiting for the writer; beyond this they are dropped and counted.
    pub queue_capacity: usize,
}

impl Default for IncidentsConfig {
    fn default() -> Self {
        IncidentsConfig {
            dir: "./reports/incidents".to_owned(),
            max_files: 200,
            max_bytes: 50 * 1024 * 1024,
            payload_mode: "truncate".to_owned(),
            payload_max_chars: 4_096,
            env_allow: [
                "HOSTNAME",
                "PATH",
                "RUST_LOG",
                "RUST_BACKTRACE",
                "BULWARK_LOG",
                "BULWARK_LOG_FORMAT",
                "BULWARK_HTTP_ADDR",
                "DATABASE_URL",
                "AMQP_URL",
                "BULWARK_MODEL_DIR",
                "ORT_DYLIB_PATH",
            ]
            .map(str::to_owned)
            .to_vec(),
            queue_capacity: 64,
        }
    }
}

/// Faults injected on purpose, for tests and game days. Off unless a marker is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChaosConfig {
    /// A sentiment batch with a text containing this panics on the inference thread.
    pub panic_on_text: Option<String>,
    /// A sentiment batch with a text containing this hangs the inference thread.
    pub hang_on_text: Option<String>,
}

/// Operator controls (`/v1/ops/...`, `bulwark ops`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpsConfig {
    /// Name of the environment variable holding the operator token (a reference, never the
    /// token itself). Unset or empty variable: operator endpoints answer `403`.
    pub token_env: String,
}

impl Default for OpsConfig {
    fn default() -> Self {
        OpsConfig {
            token_env: "BULWARK_OPERATOR_TOKEN".to_owned(),
        }
    }
}
