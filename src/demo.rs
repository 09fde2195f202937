use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use bulwark_actors::validate_job;
use bulwark_store::{JobStatus, NewJob};
use serde_json::json;

use crate::Service;

/// Texts the demo submits, cycled when more jobs are asked for.
const SAMPLE_TEXTS: &[&str] = &[
    "The onboarding was smooth and the support team was wonderful.",
    "This update broke everything. I want a refund.",
    "The package arrived on Tuesday.",
    "Absolutely love the new dashboard, it is SO much faster!",
    "Not bad, but the pricing is confusing.",
    "The app crashes every time I open settings :(",
    "Delivery was late again, very disappointing.",
    "It works. Nothing special.",
    "Best purchase I have made this year :)",
    "The documentation is unclear and the examples are wrong.",
    "Customer service resolved my issue in minutes, great job.",
    "I am not sure this is worth the money.",
];

/// Submits sample `sentiment.analyze` jobs through the same path as `POST /v1/jobs`, prints
/// each result as it finishes, then a summary.
pub async fn run(service: &Service, num_jobs: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let mut pending = Vec::with_capacity(num_jobs);
    for index in 0..num_jobs {
        let text = SAMPLE_TEXTS[index % SAMPLE_TEXTS.len()];
        let payload = json!({ "texts": [text] });
        validate_job("sentiment.analyze", &payload).map_err(|error| anyhow::anyhow!(error))?;
        let new_job = NewJob {
            kind: "sentiment.analyze".to_owned(),
            payload,
            idempotency_key: Some(format!("demo-{run_id}-{index}")),
            request_id: Some(format!("demo-{run_id}")),
            max_attempts: service.max_attempts,
        };
        let job = service
            .store
            .insert_job(&new_job)
            .await
            .context("failed to submit a demo job")?;
        pending.push((job.job().id.clone(), text));
    }
    service.job_runner.notify();
    println!("submitted {num_jobs} sentiment.analyze jobs, waiting for results...\n");

    let mut labels: BTreeMap<String, usize> = BTreeMap::new();
    let mut num_failed = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pending.is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} demo jobs did not finish within 60s",
            pending.len()
        );
        let mut still_pending = Vec::with_capacity(pending.len());
        for (job_id, text) in pending {
            let job = service
                .store
                .get_job(&job_id)
                .await?
                .context("a demo job vanished")?;
            match job.status {
                JobStatus::Succeeded => {
                    let result = &job.result.unwrap_or_default()["results"][0];
                    let label = result["label"].as_str().unwrap_or("?").to_owned();
                    let score = result["score"].as_f64().unwrap_or(0.0);
                    println!("  {label:<8} {score:>+6.3}  {text}");
                    *labels.entry(label).or_default() += 1;
                }
                status if status.is_terminal() => {
                    num_failed += 1;
                    println!(
                        "  {status:<8}         {text}  ({})",
                        job.error_message.unwrap_or_default()
                    );
                }
                _ => still_pending.push((job_id, text)),
            }
        }
        pending = still_pending;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let elapsed = started.elapsed();
    let summary: Vec<String> = labels
        .iter()
        .map(|(label, count)| format!("{count} {label}"))
        .collect();
    println!(
        "\n{num_jobs} jobs in {:.2}s ({:.0} jobs/s): {}{}",
        elapsed.as_secs_f64(),
        num_jobs as f64 / elapsed.as_secs_f64(),
        summary.join(", "),
        if num_failed > 0 {
            format!(", {num_failed} failed")
        } else {
            String::new()
        },
    );
    Ok(())
}
