//! Two real `bulwark serve` processes sharing one PostgreSQL database fire every schedule slot
//! exactly once: no slot twice, no slot lost.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use bulwark_store::JobFilter;
use bulwark_store::testsuite::{TestBackend, TestDatabase};
use bulwark_test_support::eventually;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// Starts `bulwark serve` on port 0 with a fast scheduler; returns the child and its base URL.
fn spawn_node(database_url: &str) -> (std::process::Child, String) {
    let served = common::serve(
        common::serve_command(database_url)
            .env("BULWARK__SENTIMENT__WORKERS", "1")
            .env("BULWARK__SCHEDULER__TICK_MS", "20")
            .env("BULWARK__SCHEDULER__CLAIM_BATCH", "4"),
    );
    (served.child, served.base_url)
}

/// Proves two nodes on one PostgreSQL database, both running the scheduler, create exactly
/// one job per slot of 20 one-second interval schedules: every schedule's slots are
/// consecutive (none lost), each slot has one run row and one job, and the run counters
/// match the rows (no double counting across nodes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_fire_each_slot_once() {
    let database = TestDatabase::create(TestBackend::Postgres).await;
    let store = database.open().await;
    let (mut node_a, url_a) = spawn_node(&database.url);
    let (mut node_b, url_b) = spawn_node(&database.url);
    let client = common::admin_client();
    let mut ids = Vec::new();
    for index in 0..20 {
        let url = if index % 2 == 0 { &url_a } else { &url_b };
        let body = json!({
            "name": format!("shared-{index}"),
            "kind": "sentiment.analyze",
            "payload": {"texts": ["two nodes"]},
            "trigger": {"type": "interval", "every_ms": 1000},
            "misfire_policy": "catch_up",
        });
        let response = client
            .post(format!("{url}/v1/schedules"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
        let created: Value = response.json().await.unwrap();
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    eventually(Duration::from_secs(30), || async {
        let mut all_fired = true;
        for id in &ids {
            let schedule = store.get_schedule(id).await.unwrap().unwrap();
            all_fired &= schedule.num_runs >= 5;
        }
        all_fired.then_some(())
    })
    .await;
    for child in [&mut node_a, &mut node_b] {
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    }
    for child in [&mut node_a, &mut node_b] {
        let status = child.wait().unwrap();
        assert!(status.success(), "node exits cleanly: {status}");
    }

    let mut jobs_per_key: HashMap<String, usize> = HashMap::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_jobs(&JobFilter {
                before_id: cursor,
                limit: 500,
                ..JobFilter::default()
            })
            .await
            .unwrap();
        for job in &page.jobs {
            *jobs_per_key
                .entry(job.idempotency_key.clone().unwrap_or_default())
                .or_default() += 1;
        }
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    for id in &ids {
        let schedule = store.get_schedule(id).await.unwrap().unwrap();
        let mut runs = store.list_schedule_runs(id, 1_000).await.unwrap();
        runs.sort_by_key(|run| run.fire_at_ms);
        let fired: Vec<_> = runs.iter().filter(|run| run.job_id.is_some()).collect();
        assert_eq!(
            fired.len() as i64,
            schedule.num_runs,
            "counter matches rows"
        );
        assert!(
            runs.iter().all(|run| run.outcome != "missed"),
            "no slot lost"
        );
        for pair in runs.windows(2) {
            assert_eq!(
                pair[1].fire_at_ms - pair[0].fire_at_ms,
                1_000,
                "consecutive slots"
            );
        }
        for run in fired {
            let key = format!("schedule:{id}:{}", run.fire_at_ms);
            assert_eq!(jobs_per_key.get(&key), Some(&1), "one job for slot {key}");
        }
    }
}
