//! The audit runner against a real SQLite store, a real provider actor serving the in-process
//! simulated engine, and a sentiment worker running VADER: re-runs after a crash, partial
//! audits and refused providers.

use std::sync::Arc;
use std::time::Duration;

use bulwark_actors::{
    ModelFactory, ProviderActor, ProviderActorParams, ProviderRoute, ProviderRouter, SentimentPool,
    SentimentPoolParams, SentimentWorkerActor, SentimentWorkerParams,
};
use bulwark_audit::{AuditRunner, AuditRunnerParams};
use bulwark_core::{ErrorCode, Liveness, now_ms};
use bulwark_ml::{BatchQueue, BatchingParams, EngineSet, ScoringOptions, VaderModel};
use bulwark_providers::simulated::{
    FaultKnobs, SimulatedEngine, SimulatedEngineParams, SimulatedProvider,
};
use bulwark_store::testsuite::{TestBackend, TestDatabase};
use bulwark_store::{AuditItem, AuditItemStatus, AuditStatus, NewAudit, Store};
use ractor::Actor;
use serde_json::{Value, json};
use uuid::Uuid;

/// Starts one sentiment worker on VADER and returns a pool over it.
async fn start_pool() -> SentimentPool {
    let name = format!("audit-test-worker-{}", Uuid::now_v7());
    let factory: ModelFactory = Arc::new(|| Ok(EngineSet::new(None, Box::new(VaderModel::new()))));
    let queue = BatchQueue::new(BatchingParams::default());
    let params = SentimentWorkerParams {
        model_factory: factory,
        thread_name: "audit-test-inference".to_owned(),
        queue: queue.clone(),
        liveness: Liveness::default(),
        chaos: bulwark_ml::ChaosKnobs::default(),
    };
    Actor::spawn(Some(name.clone()), SentimentWorkerActor, params)
        .await
        .unwrap();
    SentimentPool::new(SentimentPoolParams {
        worker_names: vec![name],
        queue,
        call_timeout: Duration::from_secs(10),
        engine: "lexicon".to_owned(),
        default_options: ScoringOptions::default(),
    })
}

/// Starts a provider actor for the simulated engine; `down` is a route nobody serves.
async fn start_router() -> ProviderRouter {
    let actor_name = format!("audit-test-sim-{}", Uuid::now_v7());
    let provider = SimulatedProvider::new(
        "sim",
        SimulatedEngine::new(SimulatedEngineParams::default()),
        FaultKnobs::default(),
    );
    let params = ProviderActorParams {
        provider: Arc::new(provider),
        liveness: Liveness::default(),
    };
    Actor::spawn(Some(actor_name.clone()), ProviderActor, params)
        .await
        .unwrap();
    ProviderRouter::new(vec![
        ProviderRoute {
            name: "sim".to_owned(),
            actor_name,
            fallbacks: Vec::new(),
            breaker_opt: None,
            call_timeout: Duration::from_secs(10),
        },
        ProviderRoute {
            name: "down".to_owned(),
            actor_name: format!("audit-test-absent-{}", Uuid::now_v7()),
            fallbacks: Vec::new(),
            breaker_opt: None,
            call_timeout: Duration::from_secs(1),
        },
    ])
}

struct Harness {
    runner: AuditRunner,
    store: Store,
    _database: TestDatabase,
}

async fn harness() -> Harness {
    let database = TestDatabase::create(TestBackend::Sqlite).await;
    let store = database.open().await;
    let runner = AuditRunner::new(AuditRunnerParams {
        store: store.clone(),
        providers: Arc::new(start_router().await),
        sentiment: Arc::new(start_pool().await),
        concurrency: 3,
    });
    Harness {
        runner,
        store,
        _database: database,
    }
}

fn payload(providers: &[&str]) -> Value {
    json!({
        "brand": "Acme",
        "competitors": ["Globex", "Initech", "Umbrella", "Hooli"],
        "prompts": ["What is the best crm for a small team?", "Which tracker should we use?"],
        "providers": providers,
        "samples_per_prompt": 2,
    })
}

/// Proves a run after a crash keeps what the first run recorded, redoes only the items with
/// no answer (missing or failed), never duplicates an item or a mention, and that running the
/// finished audit's job once more changes nothing.
#[tokio::test]
async fn rerun_after_crash_redoes_only_missing_items() {
    let harness = harness().await;
    let audit_id = "audit-rerun";
    let payload = payload(&["sim"]);
    harness
        .store
        .create_audit(&NewAudit {
            id: audit_id.to_owned(),
            request: payload.clone(),
            num_items: 4,
        })
        .await
        .unwrap();
    harness.store.start_audit(audit_id).await.unwrap();
    // What a first run wrote before its node died: item 0 answered, item 2 failed.
    let recorded = AuditItem {
        item_index: 0,
        prompt_index: 0,
        provider: "sim".to_owned(),
        sample: 0,
        status: AuditItemStatus::Answered,
        answer: Some("Before the crash: nothing about anyone.".to_owned()),
        answered_by: Some("sim".to_owned()),
        model: Some("bulwark-sim-1".to_owned()),
        latency_ms: Some(1.0),
        input_tokens: None,
        output_tokens: None,
        brand_mentioned: false,
        is_list: false,
        first_mention_char: None,
        first_mention_rank: None,
        list_rank: None,
        brand_sentiment: None,
        error_code: None,
        error_message: None,
        recorded_at_ms: now_ms(),
    };
    let failed = AuditItem {
        item_index: 2,
        prompt_index: 1,
        status: AuditItemStatus::Failed,
        answer: None,
        error_code: Some("UPSTREAM_TIMEOUT".to_owned()),
        ..recorded.clone()
    };
    for item in [&recorded, &failed] {
        harness
            .store
            .record_audit_item(audit_id, item, &[])
            .await
            .unwrap();
    }

    let outcome = harness.runner.run(audit_id, &payload).await.unwrap();
    assert_eq!(outcome.status, AuditStatus::Succeeded);
    assert_eq!((outcome.num_items, outcome.num_failed), (4, 0));
    let items = harness.store.list_audit_items(audit_id).await.unwrap();
    let indices: Vec<i64> = items.iter().map(|item| item.item_index).collect();
    assert_eq!(indices, [0, 1, 2, 3]);
    assert_eq!(items[0], recorded, "the first run's answer is kept");
    assert_eq!(
        items[2].status,
        AuditItemStatus::Answered,
        "the failed item is redone"
    );
    assert!(items[2].error_code.is_none());
    let mentions = harness.store.list_audit_mentions(audit_id).await.unwrap();

    let again = harness.runner.run(audit_id, &payload).await.unwrap();
    assert_eq!(again, outcome);
    assert_eq!(
        harness.store.list_audit_items(audit_id).await.unwrap(),
        items
    );
    assert_eq!(
        harness.store.list_audit_mentions(audit_id).await.unwrap(),
        mentions
    );
}

/// Proves a provider that cannot be reached makes the audit `partial`, with each of its items
/// recorded as failed under its error code, while the other provider's items are all answered
/// and scored.
#[tokio::test]
async fn unreachable_provider_makes_a_partial_audit() {
    let harness = harness().await;
    let outcome = harness
        .runner
        .run("audit-partial", &payload(&["sim", "down"]))
        .await
        .unwrap();
    assert_eq!(outcome.status, AuditStatus::Partial);
    assert_eq!((outcome.num_items, outcome.num_failed), (8, 4));
    let items = harness
        .store
        .list_audit_items("audit-partial")
        .await
        .unwrap();
    for item in &items {
        match item.provider.as_str() {
            "sim" => assert_eq!(item.status, AuditItemStatus::Answered),
            _ => {
                assert_eq!(item.status, AuditItemStatus::Failed);
                assert_eq!(item.error_code.as_deref(), Some("PROVIDER_UNAVAILABLE"));
            }
        }
    }
    let mentions = harness
        .store
        .list_audit_mentions("audit-partial")
        .await
        .unwrap();
    for mention in mentions.iter().filter(|mention| mention.is_brand) {
        let sentiment = mention.sentiment.expect("brand mentions are scored");
        assert!((-1.0..=1.0).contains(&sentiment));
    }
    let audit = harness
        .store
        .get_audit("audit-partial")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(audit.status, AuditStatus::Partial);
    assert_eq!(outcome.summary.provider("down").unwrap().num_failed, 4);
    assert_eq!(outcome.summary.overall.num_answers, 4);
}

/// Proves a payload naming a provider this node does not have fails the attempt for good and
/// marks the audit failed with the field named, without calling anyone.
#[tokio::test]
async fn unknown_provider_fails_the_audit() {
    let harness = harness().await;
    let error = harness
        .runner
        .run("audit-unknown", &payload(&["gemini"]))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::ValidationFailed);
    assert!(
        error.message.starts_with("payload.providers[0]:"),
        "{}",
        error.message
    );
    assert!(!error.is_retryable());
    let audit = harness
        .store
        .get_audit("audit-unknown")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(audit.status, AuditStatus::Failed);
    assert_eq!(audit.error_code.as_deref(), Some("VALIDATION_FAILED"));
    assert!(
        harness
            .store
            .list_audit_items("audit-unknown")
            .await
            .unwrap()
            .is_empty()
    );
}

/// Proves a cancelled audit starts no item, ends `failed` with `CANCELLED` and a message
/// saying how far it got, and hands the job the non-retryable `CANCELLED` error.
#[tokio::test]
async fn a_cancelled_audit_stops_between_items() {
    let harness = harness().await;
    let audit_id = "audit-cancelled";
    let cancel = tokio_util::sync::CancellationToken::new();
    cancel.cancel();
    let error = harness
        .runner
        .run_until_cancelled(audit_id, &payload(&["sim"]), &cancel)
        .await
        .expect_err("a cancelled audit is an error for its job");
    assert_eq!(error.code, ErrorCode::Cancelled);
    assert!(
        error.message.contains("0 of 4 items done"),
        "{}",
        error.message
    );
    let audit = harness.store.get_audit(audit_id).await.unwrap().unwrap();
    assert_eq!(audit.status, AuditStatus::Failed);
    assert_eq!(audit.error_code.as_deref(), Some("CANCELLED"));
    assert!(
        harness
            .store
            .list_audit_items(audit_id)
            .await
            .unwrap()
            .is_empty(),
        "no item was started"
    );
}
