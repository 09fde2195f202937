//! `bulwark publish --kind KIND --file FILE.jsonl`: publishes one job per line (each line is a
//! payload) to the broker with confirms, for producers and operators who want a CLI. Every
//! line is validated before anything is published, so bad input publishes nothing.

use std::path::{Path, PathBuf};

use anyhow::Context;
use bulwark_actors::validate_job;
use bulwark_broker::{
    BrokerHealth, BrokerPublisher, CONTENT_TYPE_BINCODE, CONTENT_TYPE_JSON, ENVELOPE_VERSION,
    Envelope, MessageTrace,
};
use bulwark_config::Config;
use bulwark_core::new_traceparent;
use clap::{Args, ValueEnum};
use serde_json::Value;

/// The arguments of `bulwark publish`.
#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    /// The job kind, e.g. `sentiment.analyze`.
    #[arg(long)]
    pub kind: String,
    /// One JSON payload per line; blank lines are skipped.
    #[arg(long, value_name = "FILE.jsonl")]
    pub file: PathBuf,
    /// The envelope's wire format.
    #[arg(long, value_enum, default_value_t = WireFormat::Json)]
    pub format: WireFormat,
}

/// `application/json` or `application/x-bincode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WireFormat {
    Json,
    Bincode,
}

/// Why `bulwark publish` did not publish.
#[derive(Debug, thiserror::Error)]
pub enum PublishFailure {
    /// The input or the configuration is wrong (exit 2).
    #[error("{0}")]
    BadInput(String),
    /// The broker refused or was unreachable (exit 1).
    #[error(transparent)]
    Broker(#[from] anyhow::Error),
}

/// Reads and validates every line; returns the payloads or the first bad line's error.
pub fn read_payloads(kind: &str, file: &Path) -> Result<Vec<Value>, PublishFailure> {
    let text = std::fs::read_to_string(file).map_err(|error| {
        PublishFailure::BadInput(format!("cannot read {}: {error}", file.display()))
    })?;
    let mut payloads = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let payload: Value = serde_json::from_str(line).map_err(|error| {
            PublishFailure::BadInput(format!("line {line_number}: not JSON: {error}"))
        })?;
        validate_job(kind, &payload).map_err(|error| {
            PublishFailure::BadInput(format!("line {line_number}: {}", error.message))
        })?;
        payloads.push(payload);
    }
    if payloads.is_empty() {
        return Err(PublishFailure::BadInput(format!(
            "{}: no payloads",
            file.display()
        )));
    }
    Ok(payloads)
}

/// Publishes every payload of the file; returns how many were confirmed.
pub async fn run(config: &Config, args: &PublishArgs) -> Result<usize, PublishFailure> {
    bulwark_core::JobKind::parse(&args.kind)
        .map_err(|error| PublishFailure::BadInput(error.message))?;
    let payloads = read_payloads(&args.kind, &args.file)?;
    let settings = crate::broker::broker_settings(config, "bulwark-publish").ok_or_else(|| {
        PublishFailure::BadInput("amqp.url is not set (set AMQP_URL or [amqp] url)".to_owned())
    })?;
    let publisher = BrokerPublisher::new(settings, BrokerHealth::default());
    let content_type = match args.format {
        WireFormat::Json => CONTENT_TYPE_JSON,
        WireFormat::Bincode => CONTENT_TYPE_BINCODE,
    };
    let traceparent = new_traceparent();
    for (index, payload) in payloads.iter().enumerate() {
        let envelope = Envelope {
            v: ENVELOPE_VERSION,
            id: uuid::Uuid::now_v7().to_string(),
            kind: args.kind.clone(),
            payload: payload.clone(),
            idempotency_key: None,
            deadline: None,
            priority: None,
            run_at: None,
            timeout_ms: None,
        };
        let request_id = format!("publish-{}", envelope.id);
        publisher
            .publish_envelope(
                &envelope,
                content_type,
                &MessageTrace {
                    request_id: Some(&request_id),
                    traceparent: Some(&traceparent),
                },
            )
            .await
            .with_context(|| format!("failed to publish the job of line {}", index + 1))?;
    }
    publisher.close().await;
    Ok(payloads.len())
}
