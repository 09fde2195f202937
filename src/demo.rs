use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use bulwark_actors::validate_job;
use bulwark_audit::request::AuditRequest;
use bulwark_audit::summary_from_rows;
use bulwark_store::{JobStatus, NewAudit, NewJob};
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

/// Makes an `admin` key for the person running the demo and prints its token once (only its
/// digest is stored), with how to use it.
pub async fn print_demo_key(service: &Service) -> anyhow::Result<()> {
    let issued = service
        .auth
        .authenticator
        .create_key(&bulwark_auth::NewKey {
            name: "demo".to_owned(),
            scopes: bulwark_auth::Scopes::new(&[bulwark_auth::Scope::Admin]),
            expires_at_ms: None,
            daily_provider_calls: None,
        })
        .await
        .context("failed to make the demo key")?;
    println!(
        "an admin key for this demo (shown once; revoke it with `bulwark keys revoke {}`):\n\n  \
         export BULWARK_API_KEY={}\n  curl -H \"Authorization: Bearer $BULWARK_API_KEY\" \
         {}/v1/jobs\n",
        issued.key.id, issued.token, service.base_url
    );
    Ok(())
}

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
            trace_id: None,
            max_attempts: service.max_attempts,
            priority: bulwark_store::DEFAULT_PRIORITY,
            run_at_ms: None,
            timeout_ms: None,
            result_ttl_ms: None,
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

/// The provider the demo audit asks: the in-process simulated engine.
pub const DEMO_AUDIT_PROVIDER: &str = "demo-sim";

/// Adds the in-process simulated provider the demo audit asks, unless one of that name is
/// configured already.
pub fn add_demo_provider(config: &mut bulwark_config::Config) {
    config
        .providers
        .entry(DEMO_AUDIT_PROVIDER.to_owned())
        .or_insert_with(|| bulwark_config::ProviderConfig {
            kind: bulwark_config::ProviderKind::Simulated,
            ..bulwark_config::ProviderConfig::default()
        });
}

/// Runs one AI-visibility audit against the simulated provider through the same path as
/// `POST /v1/audits`, waits for it and prints its summary.
pub async fn run_audit(service: &Service) -> anyhow::Result<()> {
    let request = AuditRequest {
        brand: "Acme".to_owned(),
        aliases: vec!["Acme Corp".to_owned()],
        competitors: vec![
            "Globex".to_owned(),
            "Initech".to_owned(),
            "Umbrella".to_owned(),
            "Hooli".to_owned(),
        ],
        prompts: vec![
            "What is the best crm for a small team?".to_owned(),
            "Which project tracker should a startup use?".to_owned(),
            "Where should we host our web app?".to_owned(),
        ],
        providers: vec![DEMO_AUDIT_PROVIDER.to_owned()],
        samples_per_prompt: 3,
    };
    let payload = serde_json::to_value(&request)?;
    validate_job("audit.run", &payload).map_err(|error| anyhow::anyhow!(error))?;
    let started = Instant::now();
    let new_job = NewJob {
        kind: "audit.run".to_owned(),
        payload: payload.clone(),
        idempotency_key: Some(format!("demo-audit-{}", uuid::Uuid::now_v7().simple())),
        request_id: Some("demo-audit".to_owned()),
        trace_id: None,
        max_attempts: service.max_attempts,
        priority: bulwark_store::DEFAULT_PRIORITY,
        run_at_ms: None,
        timeout_ms: None,
        result_ttl_ms: None,
    };
    let job = service
        .store
        .insert_job(&new_job)
        .await
        .context("failed to submit the demo audit")?;
    let audit_id = job.job().id.clone();
    let num_items = u32::try_from(request.num_items()).unwrap_or(u32::MAX);
    service
        .store
        .create_audit(&NewAudit {
            id: audit_id.clone(),
            request: payload,
            num_items,
        })
        .await
        .context("failed to store the demo audit")?;
    service.job_runner.notify();
    println!(
        "\naudit {audit_id}: brand Acme, {} prompts x 1 provider x {} samples, waiting...",
        request.prompts.len(),
        request.samples_per_prompt
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let audit = loop {
        let audit = service
            .store
            .get_audit(&audit_id)
            .await?
            .context("the demo audit vanished")?;
        if audit.status.is_terminal() {
            break audit;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the demo audit did not finish within 120s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let items = service.store.list_audit_items(&audit_id).await?;
    let mentions = service.store.list_audit_mentions(&audit_id).await?;
    let summary = summary_from_rows(&request, &items, &mentions);
    let overall = &summary.overall;
    let fixed =
        |value_opt: Option<f64>| value_opt.map_or("-".to_owned(), |value| format!("{value:.2}"));
    let percent = |value_opt: Option<f64>| {
        value_opt.map_or("-".to_owned(), |value| format!("{:.0}%", value * 100.0))
    };
    println!(
        "audit {} in {:.2}s: {} of {} answers mention Acme (mention rate {}), share of voice {}, \
         average sentiment {}, average first-mention rank {}, {} failed",
        audit.status,
        started.elapsed().as_secs_f64(),
        overall.num_brand_answers,
        overall.num_answers,
        percent(Some(overall.mention_rate)),
        percent(overall.share_of_voice),
        fixed(overall.average_sentiment),
        fixed(overall.average_first_mention_rank),
        overall.num_failed,
    );
    for competitor in &overall.competitors {
        println!(
            "  {:<10} {} mentions, share of voice {}",
            competitor.name,
            competitor.num_mentions,
            percent(competitor.share_of_voice)
        );
    }
    println!(
        "  report: {}/v1/audits/{audit_id}/report.html",
        service.base_url
    );
    Ok(())
}
