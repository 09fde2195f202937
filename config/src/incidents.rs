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

/// Rejects a chaos marker on a build without the `chaos` feature: a game-day fault asked of a
/// build meant to ship is an error, never silently ignored.
pub(crate) fn validate_chaos(chaos: &ChaosConfig) -> Result<(), (&'static str, String)> {
    if cfg!(feature = "chaos") {
        return Ok(());
    }
    let markers = [
        ("chaos.panic_on_text", &chaos.panic_on_text),
        ("chaos.hang_on_text", &chaos.hang_on_text),
    ];
    match markers.into_iter().find(|(_, marker)| marker.is_some()) {
        Some((key, _)) => Err((
            key,
            "is a game-day fault: it needs a build with the `chaos` cargo feature \
             (cargo build --features chaos)"
                .to_owned(),
        )),
        None => Ok(()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves a chaos marker is accepted only by a build with the `chaos` feature, and that a
    /// build without it names the setting and the missing feature instead of ignoring it.
    #[test]
    fn chaos_markers_need_the_chaos_feature() {
        let chaos = ChaosConfig {
            panic_on_text: None,
            hang_on_text: Some("__hang__".to_owned()),
        };
        let result = validate_chaos(&chaos);
        if cfg!(feature = "chaos") {
            assert_eq!(result, Ok(()));
        } else {
            let (key, message) = result.expect_err("a marker without the feature is refused");
            assert_eq!(key, "chaos.hang_on_text");
            assert!(message.contains("`chaos` cargo feature"), "{message}");
        }
        assert_eq!(validate_chaos(&ChaosConfig::default()), Ok(()));
    }
}
