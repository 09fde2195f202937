//! `bulwark simulate-provider`: the simulated answer engine as an HTTP server speaking the
//! OpenAI and Anthropic wire formats, for demos, tests and game days.

use std::collections::HashMap;

use anyhow::Context;
use bulwark_providers::simulated::{
    FaultKnobs, SimulatedEngineParams, SimulatorParams, SimulatorServer,
};
use clap::Args;
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

/// Flags of `bulwark simulate-provider`. Faults can be changed later with
/// `curl -X PUT http://ADDR/admin/faults -d '{"error_rate": 0.5}'`.
#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// Address to listen on; port 0 picks a free port (printed at start).
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub addr: String,
    /// Answer seed: the same seed and prompt always give the same answer.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// A brand the answers speak of, besides capitalised names in the prompt (repeatable).
    #[arg(long = "brand", value_name = "NAME")]
    pub brands: Vec<String>,
    /// Environment variable holding the API key clients must present; unset: no key needed.
    #[arg(long, value_name = "VAR")]
    pub api_key_env: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    #[arg(long, default_value_t = 0)]
    pub latency_jitter_ms: u64,
    #[arg(long, default_value_t = 0.0)]
    pub slow_rate: f64,
    #[arg(long, default_value_t = 0)]
    pub slow_ms: u64,
    #[arg(long, default_value_t = 0.0)]
    pub hang_rate: f64,
    #[arg(long, default_value_t = 0.0)]
    pub drop_rate: f64,
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    #[arg(long, default_value_t = 0.0)]
    pub rate_limit_rate: f64,
    #[arg(long, default_value_t = 1_000)]
    pub retry_after_ms: u64,
    #[arg(long, default_value_t = 0.0)]
    pub malformed_rate: f64,
}

impl SimulateArgs {
    /// Returns the simulator's params, reading the API key from `env` when asked to.
    pub fn params(&self, env: &HashMap<String, String>) -> anyhow::Result<SimulatorParams> {
        let faults = FaultKnobs {
            latency_ms: self.latency_ms,
            latency_jitter_ms: self.latency_jitter_ms,
            slow_rate: self.slow_rate,
            slow_ms: self.slow_ms,
            hang_rate: self.hang_rate,
            drop_rate: self.drop_rate,
            error_rate: self.error_rate,
            rate_limit_rate: self.rate_limit_rate,
            retry_after_ms: self.retry_after_ms,
            malformed_rate: self.malformed_rate,
        };
        faults
            .validate()
            .map_err(|message| anyhow::anyhow!(message))?;
        let mut engine = SimulatedEngineParams {
            seed: self.seed,
            ..SimulatedEngineParams::default()
        };
        if !self.brands.is_empty() {
            engine.brands = self.brands.clone();
        }
        let api_key = match &self.api_key_env {
            Some(variable) => Some(
                env.get(variable)
                    .cloned()
                    .with_context(|| format!("environment variable {variable} is not set"))?,
            ),
            None => None,
        };
        Ok(SimulatorParams {
            engine,
            faults,
            api_key,
        })
    }
}

/// Serves until SIGINT or SIGTERM.
pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let params = args.params(&env)?;
    let mut terminate = signal(SignalKind::terminate()).context("failed to listen for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("failed to listen for SIGINT")?;
    let addr = args.addr;
    let server = SimulatorServer::start(&addr, params)
        .await
        .with_context(|| format!("failed to listen on {addr}"))?;
    println!(
        "simulated provider on http://{0}: OpenAI format at http://{0}/v1/chat/completions, \
         Anthropic format at http://{0}/v1/messages, faults at http://{0}/admin/faults",
        server.addr()
    );
    tokio::select! {
        _ = terminate.recv() => info!("received SIGTERM"),
        _ = interrupt.recv() => info!("received SIGINT"),
    }
    server.stop().await;
    Ok(())
}
