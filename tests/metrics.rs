//! The metrics a live node exports, scraped after a short workload over RabbitMQ and
//! PostgreSQL, checked against the catalog the code declares (`bulwark::telemetry::CATALOG`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bulwark::telemetry::CATALOG;
use bulwark_store::testsuite::TestBackend;
use bulwark_test_support::eventually;
use common::TestService;
use common::broker::{amqp_config, delete_namespace, unique_namespace};
use serde_json::json;

/// Metric families of one scrape: each family's `# TYPE` and whether it had a `# HELP`, and the
/// family of every sample line.
#[derive(Debug, Default)]
struct Scrape {
    types: BTreeMap<String, String>,
    helped: BTreeSet<String>,
    sampled: BTreeSet<String>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut scrape = Scrape::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or_default();
                scrape.helped.insert(name.to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut words = rest.split(' ');
                let name = words.next().unwrap_or_default().to_owned();
                let metric_type = words.next().unwrap_or_default().to_owned();
                scrape.types.insert(name, metric_type);
            } else if !line.is_empty() && !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                scrape.sampled.insert(scrape.family_of(name));
            }
        }
        scrape
    }

    /// Returns the family a sample belongs to: a histogram's `_bucket`, `_sum` and `_count`
    /// samples belong to the histogram.
    fn family_of(&self, sample: &str) -> String {
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = sample.strip_suffix(suffix)
                && self.types.get(base).is_some_and(|kind| kind == "histogram")
            {
                return base.to_owned();
            }
        }
        sample.to_owned()
    }
}

/// Returns the metric families a rule file or dashboard names: every `bulwark_*` and
/// `process_*` identifier, a histogram's `_bucket`, `_sum` and `_count` read as the histogram.
fn referenced_metrics(text: &str) -> BTreeSet<String> {
    let histograms: BTreeSet<&str> = CATALOG
        .iter()
        .flat_map(|(_, specs)| specs.iter())
        .filter(|spec| spec.metric_type.as_str() == "histogram")
        .map(|spec| spec.name)
        .collect();
    let is_word = |character: char| character.is_ascii_alphanumeric() || character == '_';
    let mut names = BTreeSet::new();
    for (start, _) in text.match_indices(['b', 'p']) {
        let rest = &text[start..];
        let follows_word = text[..start].chars().next_back().is_some_and(is_word);
        if follows_word || !(rest.starts_with("bulwark_") || rest.starts_with("process_")) {
            continue;
        }
        let end = rest
            .find(|character| !is_word(character))
            .unwrap_or(rest.len());
        let name = &rest[..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| histograms.contains(base))
            })
            .unwrap_or(name);
        names.insert(family.to_owned());
    }
    names
}

/// The alert rules and every dashboard, as text.
fn alerts_and_dashboards() -> Vec<(String, String)> {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut files = vec![format!("{root}/deploy/prometheus/alerts.yml")];
    let dashboards = std::fs::read_dir(format!("{root}/deploy/grafana")).expect("deploy/grafana");
    for entry in dashboards {
        let path = entry.expect("dashboard entry").path();
        if path
            .extension()
            .is_some_and(|extension| extension == "json")
        {
            files.push(path.display().to_string());
        }
    }
    files
        .into_iter()
        .map(|path| {
            let text =
                std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
            (path, text)
        })
        .collect()
}

/// Series alerts or dashboards name that a node creates only at their first event (a provider
/// call, a dead letter, a refused request) or only when it exports traces: the live scrape after
/// a plain workload lacks them, the catalog check still holds them to a declared name (and
/// tests/traces.rs scrapes the trace counters of a traced node).
const EVENT_BORN: &[&str] = &[
    "bulwark_provider_breaker_state",
    "bulwark_provider_calls_total",
    "bulwark_provider_call_duration_seconds",
    "bulwark_provider_retries_total",
    "bulwark_provider_rejected_total",
    "bulwark_dead_letters",
    "bulwark_dead_lettered_total",
    "bulwark_dead_letters_recovered_total",
    "bulwark_dead_letters_parked_total",
    "bulwark_schedule_lag_seconds",
    "bulwark_sentiment_rejected_total",
    "bulwark_actor_exits_total",
    "bulwark_incidents_total",
    // Only on nodes that export traces.
    "bulwark_trace_spans_total",
    "bulwark_trace_export_duration_seconds",
];

/// Proves every metric an alert rule or a dashboard panel names is one the code declares (a
/// histogram through its `_bucket`, `_sum` or `_count`), so no panel or alert reads a series
/// that can never exist.
#[test]
fn alerts_and_dashboards_name_declared_metrics() {
    let declared: BTreeSet<&str> = CATALOG
        .iter()
        .flat_map(|(_, specs)| specs.iter())
        .map(|spec| spec.name)
        .collect();
    let files = alerts_and_dashboards();
    assert!(
        files.len() >= 2,
        "the alert rules and at least one dashboard"
    );
    for (path, text) in &files {
        let referenced = referenced_metrics(text);
        assert!(!referenced.is_empty(), "{path} names no metric");
        for name in &referenced {
            assert!(
                declared.contains(name.as_str()),
                "{path} names {name}, which no code declares"
            );
        }
    }
}

/// Series the node must export once it has run jobs over RabbitMQ, answered `/ready` and made
/// a pass of its job runner and republisher.
const EXPECTED: &[&str] = &[
    "bulwark_build_info",
    "bulwark_startup_duration_seconds",
    "bulwark_ready",
    "bulwark_ready_last_success_timestamp_seconds",
    "bulwark_node_heartbeat_timestamp_seconds",
    "bulwark_queue_jobs",
    "bulwark_queue_oldest_job_age_seconds",
    "bulwark_outbox_jobs",
    "bulwark_jobs_total",
    "bulwark_job_duration_seconds",
    "bulwark_http_requests_total",
    "bulwark_http_request_duration_seconds",
    "bulwark_inference_batch_texts",
    "bulwark_inference_batch_duration_seconds",
    "bulwark_broker_connections_total",
    "bulwark_broker_publishes_total",
    "bulwark_broker_link_up",
    "bulwark_store_group_commit_batch_size",
    "bulwark_db_pool_connections",
    "bulwark_db_pool_max_connections",
    "bulwark_incident_dir_bytes",
    "bulwark_incident_disk_free_bytes",
    "bulwark_incident_disk_size_bytes",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_threads",
];

/// Proves every metric family a live node exports is declared in the catalog with the type it
/// is exported as, carries `# HELP` and `# TYPE`, is never a summary, and that the node exports
/// the series operators need (build, process, pool, queue age, outbox, heartbeat, inference
/// batches, broker links and publishes) after a short workload, and every series an alert or a
/// dashboard reads, but those born at their first event ([`EVENT_BORN`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exported_metrics_are_declared_described_and_histograms() {
    let namespace = unique_namespace();
    let service = TestService::start_with(TestBackend::Postgres, amqp_config(&namespace)).await;
    let mut job_ids = Vec::new();
    for index in 0..3 {
        let (status, job) = service
            .post_json(
                "/v1/jobs",
                &json!({"kind": "sentiment.analyze", "payload": {"texts": [format!("a fine day {index}")]}}),
            )
            .await;
        assert_eq!(status, 202, "{job}");
        job_ids.push(job["id"].as_str().expect("id").to_owned());
    }
    for job_id in &job_ids {
        let job = service.wait_for_job(job_id).await;
        assert_eq!(job["status"], "succeeded", "{job}");
    }
    let (status, ready) = service.get_json("/ready").await;
    assert_eq!(status, 200, "{ready}");

    let scrape = eventually(Duration::from_secs(30), || async {
        let scrape = Scrape::parse(&service.get_text("/metrics").await);
        EXPECTED
            .iter()
            .all(|name| scrape.sampled.contains(*name))
            .then_some(scrape)
    })
    .await;
    let declared: BTreeMap<&str, &str> = CATALOG
        .iter()
        .flat_map(|(_, specs)| specs.iter())
        .map(|spec| (spec.name, spec.metric_type.as_str()))
        .collect();
    for family in &scrape.sampled {
        let exported_type = scrape.types.get(family).map(String::as_str);
        assert_ne!(exported_type, Some("summary"), "{family} is a summary");
        assert_eq!(
            exported_type,
            declared.get(family.as_str()).copied(),
            "{family}: exported with one type, declared with another (or not declared)"
        );
        assert!(scrape.helped.contains(family), "{family} has no # HELP");
    }
    for (path, text) in alerts_and_dashboards() {
        for name in referenced_metrics(&text) {
            assert!(
                scrape.sampled.contains(&name) || EVENT_BORN.contains(&name.as_str()),
                "{path} names {name}, which the node does not export"
            );
        }
    }
    let queue_kinds: BTreeSet<String> = service
        .get_text("/metrics")
        .await
        .lines()
        .filter_map(|line| line.strip_prefix("bulwark_queue_jobs{kind=\""))
        .filter_map(|rest| rest.split('"').next().map(str::to_owned))
        .collect();
    assert_eq!(
        queue_kinds.len(),
        bulwark_core::JobKind::ALL.len(),
        "every kind reported, empty ones as zero: {queue_kinds:?}"
    );

    service.service.shutdown().await.expect("shutdown");
    delete_namespace(&namespace).await;
}
