//! What every Bulwark program (`bulwark`, `bulwark-bench`) does before its command runs: load
//! the configuration, install logging, start the async runtime, and turn the command's result
//! into an exit code.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use bulwark_config::{Config, ConfigSources};
use tracing::error;

use crate::logging;

/// Exit code for a configuration error, as for a usage error.
pub const EXIT_CONFIG: u8 = 2;

/// Loads the configuration from `file` (or the default file) and the environment. On an error,
/// prints it and returns the exit code to leave with.
pub fn load_config(file: Option<PathBuf>) -> Result<Config, ExitCode> {
    let sources = ConfigSources {
        explicit_file: file,
        env: std::env::vars().collect::<HashMap<String, String>>(),
    };
    let config = bulwark_config::load(&sources).map_err(|error| {
        eprintln!("error: {error}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    // The kinds of `[jobs.kinds.<kind>]` are known here, not in the config crate.
    if let Err(error) = crate::settings::job_defaults(&config) {
        eprintln!("error: {error}");
        return Err(ExitCode::from(EXIT_CONFIG));
    }
    Ok(config)
}

/// Starts the async runtime, installs logging (and trace export) as `[telemetry]` says for
/// node `node_id`, and runs `command` to completion. An error is logged and printed, and exits
/// with a failure. Queued spans are flushed before the process leaves.
pub fn run_command<F>(program: &str, config: &Config, command: F) -> ExitCode
where
    F: Future<Output = anyhow::Result<ExitCode>>,
{
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: failed to start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let env: HashMap<String, String> = std::env::vars().collect();
    let node_id = config
        .jobs
        .node_id
        .clone()
        .unwrap_or_else(|| program.to_owned());
    let telemetry = {
        let _entered = runtime.enter();
        match logging::init(&config.telemetry, &node_id, &env) {
            Ok(telemetry) => telemetry,
            Err(error) => {
                eprintln!("error: {error:#}");
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    };
    let code = match runtime.block_on(command) {
        Ok(code) => code,
        Err(error) => {
            error!(error = format!("{error:#}"), "{program} failed");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    };
    let _entered = runtime.enter();
    telemetry.shutdown();
    code
}
