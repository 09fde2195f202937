//! Audit tables: creation, idempotent item writes, listing and finishing, run against both
//! SQLite and the real PostgreSQL.

use bulwark_core::now_ms;
use bulwark_store::on_both_backends;
use bulwark_store::testsuite::{TestBackend, TestDatabase};
use bulwark_store::{AuditFinish, AuditItem, AuditItemStatus, AuditMention, AuditStatus, NewAudit};
use serde_json::json;

fn answered(item_index: i64, answer: &str) -> AuditItem {
    AuditItem {
        item_index,
        prompt_index: 0,
        provider: "sim".to_owned(),
        sample: item_index,
        status: AuditItemStatus::Answered,
        answer: Some(answer.to_owned()),
        answered_by: Some("sim".to_owned()),
        model: Some("sim-1".to_owned()),
        latency_ms: Some(12.5),
        input_tokens: Some(10),
        output_tokens: Some(20),
        brand_mentioned: true,
        is_list: false,
        first_mention_char: Some(0),
        first_mention_rank: Some(1),
        list_rank: None,
        brand_sentiment: Some(0.75),
        error_code: None,
        error_message: None,
        recorded_at_ms: now_ms(),
    }
}

fn mention(item_index: i64, mention_index: i64, entity: &str) -> AuditMention {
    AuditMention {
        item_index,
        mention_index,
        entity: entity.to_owned(),
        is_brand: entity == "Acme",
        matched_text: entity.to_lowercase(),
        char_offset: mention_index * 10,
        sentence_index: 0,
        list_rank: Some(2),
        sentence: format!("{entity} is fine, \"quoted\", 'single'."),
        sentiment: Some(0.5),
        sentiment_label: Some("positive".to_owned()),
    }
}

/// Proves an audit is created once per id, items and mentions round-trip with every column,
/// rewriting an item replaces it and its mentions instead of adding rows, and finishing
/// stores the status and summary.
async fn audit_lifecycle(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    let new_audit = NewAudit {
        id: "audit-1".to_owned(),
        request: json!({ "brand": "Acme" }),
        num_items: 2,
    };
    let created = store.create_audit(&new_audit).await.unwrap();
    assert_eq!(created.status, AuditStatus::Queued);
    assert_eq!(created.num_items, 2);
    let again = store
        .create_audit(&NewAudit {
            request: json!({ "brand": "Other" }),
            ..new_audit.clone()
        })
        .await
        .unwrap();
    assert_eq!(
        again.request,
        json!({ "brand": "Acme" }),
        "first write wins"
    );
    assert!(store.get_audit("missing").await.unwrap().is_none());

    store.start_audit("audit-1").await.unwrap();
    let running = store.get_audit("audit-1").await.unwrap().unwrap();
    assert_eq!(running.status, AuditStatus::Running);
    assert!(running.started_at_ms.is_some());

    let failed = AuditItem {
        status: AuditItemStatus::Failed,
        answer: None,
        error_code: Some("RATE_LIMITED".to_owned()),
        error_message: Some("429 from upstream".to_owned()),
        ..answered(1, "")
    };
    store
        .record_audit_item("audit-1", &failed, &[])
        .await
        .unwrap();
    let first = answered(0, "Acme and Globex");
    let mentions = [mention(0, 0, "Acme"), mention(0, 1, "Globex")];
    store
        .record_audit_item("audit-1", &first, &mentions)
        .await
        .unwrap();
    // A re-run after a crash writes item 0 again, now with one mention.
    store
        .record_audit_item("audit-1", &first, &mentions[..1])
        .await
        .unwrap();

    let items = store.list_audit_items("audit-1").await.unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0], first);
    assert_eq!(items[1].status, AuditItemStatus::Failed);
    assert_eq!(items[1].error_code.as_deref(), Some("RATE_LIMITED"));
    let stored_mentions = store.list_audit_mentions("audit-1").await.unwrap();
    assert_eq!(stored_mentions, mentions[..1]);

    store
        .finish_audit(
            "audit-1",
            &AuditFinish {
                status: AuditStatus::Partial,
                summary: json!({ "overall": { "mention_rate": 1.0 } }),
                error_opt: None,
            },
        )
        .await
        .unwrap();
    let finished = store.get_audit("audit-1").await.unwrap().unwrap();
    assert_eq!(finished.status, AuditStatus::Partial);
    assert_eq!(
        finished.summary,
        Some(json!({ "overall": { "mention_rate": 1.0 } }))
    );
    assert!(finished.finished_at_ms.is_some());
    assert!(finished.status.is_terminal());
    store.close().await;
}
on_both_backends!(audit_lifecycle_on, audit_lifecycle);
