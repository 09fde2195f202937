//! Priority end to end: a high-priority job overtakes a backlog of 1,000 low-priority jobs
//! (calls to the simulated answer engine, over loopback HTTP, 100 ms each) on
//! the database queue (SQLite, PostgreSQL) and over RabbitMQ (whose quorum queues have no
//! priorities: each kind has a queue per priority band, consumed side by side).

mod common;

use std::time::Duration;

use bulwark_config::{Config, ProviderConfig, ProviderKind};
use bulwark_providers::simulated::{FaultKnobs, SimulatorParams, SimulatorServer};
use bulwark_store::JobFilter;
use common::Transport;
use common::broker::delete_namespace;
use serde_json::json;

/// The low-priority jobs queued before the high-priority one.
const BACKLOG: usize = 1_000;
/// How long the simulated answer engine takes per call: the backlog takes seconds to run.
const CALL_MS: u64 = 100;

fn settings(config: &mut Config, provider_url: &str) {
    config.sentiment.engine = bulwark_config::SentimentEngine::Lexicon;
    // Jobs a node already took are not reordered: over RabbitMQ up to `prefetch` jobs of a
    // band are in flight, and their provider calls wait in the provider's bulkhead in the
    // order they came. A prefetch within the provider's concurrency keeps that wait at zero,
    // as an operator sizing for priorities would.
    config.amqp.prefetch = 16;
    config.providers.insert(
        "sim".to_owned(),
        ProviderConfig {
            kind: ProviderKind::Openai,
            base_url: Some(provider_url.to_owned()),
            allow_plain_http: true,
            max_attempts: 1,
            // Every call of the backlog waits its turn instead of being refused as overload.
            max_concurrent: 64,
            max_waiting: 2 * BACKLOG,
            ..ProviderConfig::default()
        },
    );
}

fn call(prompt: &str, priority: u8) -> serde_json::Value {
    json!({"kind": "provider.complete", "payload": {"provider": "sim", "prompt": prompt}, "priority": priority})
}

async fn overtake_scenario(transport: Transport) {
    let simulator = SimulatorServer::start(
        "127.0.0.1:0",
        SimulatorParams {
            faults: FaultKnobs {
                latency_ms: CALL_MS,
                ..FaultKnobs::default()
            },
            ..SimulatorParams::default()
        },
    )
    .await
    .expect("simulator listens");
    let provider_url = simulator.base_url();
    let (service, namespace_opt) = transport
        .start(move |config| settings(config, &provider_url))
        .await;
    let backlog: Vec<_> = (0..BACKLOG)
        .map(|index| call(&format!("slow and steady {index}"), 0))
        .collect();
    let (status, batch) = service
        .post_json("/v1/jobs/batch", &json!({ "jobs": backlog }))
        .await;
    assert_eq!(status, 200, "{transport:?}: {batch}");
    assert_eq!(batch["counts"]["created"], BACKLOG, "{batch}");
    let (status, urgent) = service.post_json("/v1/jobs", &call("urgent", 9)).await;
    assert_eq!(status, 202, "{urgent}");
    let urgent = service
        .wait_for_job(urgent["id"].as_str().expect("id"))
        .await;
    assert_eq!(urgent["status"], "succeeded", "{transport:?}: {urgent}");

    // Every backlog job finishes; count those that finished before the urgent one did.
    let store = service.database.open().await;
    let finished = bulwark_test_support::eventually(Duration::from_secs(90), || async {
        let page = store
            .list_jobs(&JobFilter {
                status: Some(bulwark_store::JobStatus::Succeeded),
                kind: Some("provider.complete".to_owned()),
                before_id: None,
                limit: 2 * BACKLOG as u32,
            })
            .await
            .expect("listed");
        (page.jobs.len() == BACKLOG + 1).then_some(page.jobs)
    })
    .await;
    store.close().await;
    let urgent_job = finished
        .iter()
        .find(|job| job.priority == 9)
        .expect("the urgent job finished");
    let (submitted, done) = (
        urgent_job.created_at_ms,
        urgent_job.finished_at_ms.expect("finished"),
    );
    // The backlog is what was still to run when the urgent job was submitted; the jobs that
    // overtook it are those of the backlog that finished before it did.
    let backlog: Vec<i64> = finished
        .iter()
        .filter(|job| job.priority == 0)
        .filter_map(|job| job.finished_at_ms)
        .filter(|at| *at >= submitted)
        .collect();
    let num_ahead = backlog.iter().filter(|at| **at < done).count();
    assert!(
        backlog.len() >= BACKLOG / 4,
        "{transport:?}: only {} jobs were left to run when the urgent one came",
        backlog.len()
    );
    assert!(
        num_ahead < backlog.len() / 4,
        "{transport:?}: {num_ahead} of a backlog of {} low-priority jobs finished before the \
         urgent one",
        backlog.len()
    );
    service.service.shutdown().await.expect("stops");
    if let Some(namespace) = namespace_opt {
        delete_namespace(&namespace).await;
    }
}

/// Proves a priority-9 job submitted after 1,000 priority-0 jobs finishes before three
/// quarters of the backlog still to run when it came (at least a quarter of them), on every
/// transport (on RabbitMQ through its band's own queue); and every job runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_priority_job_overtakes_a_backlog_on_every_transport() {
    for transport in Transport::ALL {
        tokio::time::timeout(Duration::from_secs(150), overtake_scenario(transport))
            .await
            .unwrap_or_else(|_| panic!("{transport:?}: the scenario did not finish in 150 s"));
    }
}
