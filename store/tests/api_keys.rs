//! API keys, daily provider-call budgets and the server secret, against SQLite and PostgreSQL.

use bulwark_core::now_ms;
use bulwark_store::on_both_backends;
use bulwark_store::testsuite::{TestBackend, TestDatabase};
use bulwark_store::{NewApiKeyRow, UsageCharge};

fn new_key(id: &str, digest: &str) -> NewApiKeyRow {
    NewApiKeyRow {
        id: id.to_owned(),
        name: "ci".to_owned(),
        prefix: "bwk_abcdefgh".to_owned(),
        digest: digest.to_owned(),
        scopes: "read,submit".to_owned(),
        expires_at_ms: None,
        rotated_from: None,
        daily_provider_calls: None,
    }
}

/// Proves keys are found by digest, revoked keys stop being usable, and expiry only ever
/// moves earlier.
async fn keys_are_found_revoked_and_expired(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    store.insert_api_key(&new_key("k1", "d1")).await.unwrap();
    store.insert_api_key(&new_key("k2", "d2")).await.unwrap();
    let found = store.find_api_key_by_digest("d2").await.unwrap().unwrap();
    assert_eq!(found.id, "k2");
    assert_eq!(store.list_usable_api_keys(now_ms()).await.unwrap().len(), 2);

    store.revoke_api_key("k1").await.unwrap().unwrap();
    let expired = store.expire_api_key_by("k2", 1_000).await.unwrap().unwrap();
    assert_eq!(expired.expires_at_ms, Some(1_000));
    let later = store.expire_api_key_by("k2", 5_000).await.unwrap().unwrap();
    assert_eq!(later.expires_at_ms, Some(1_000), "expiry never moves later");
    assert!(
        store
            .list_usable_api_keys(now_ms())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.revoke_api_key("missing").await.unwrap().is_none());
    assert_eq!(
        store.list_api_keys().await.unwrap().len(),
        2,
        "revoked keys stay listed"
    );
    store
        .touch_api_keys(&[("k1".to_owned(), 42)])
        .await
        .unwrap();
    let touched = store.get_api_key("k1").await.unwrap().unwrap();
    assert_eq!(touched.last_used_at_ms, Some(42));
}
on_both_backends!(keys, keys_are_found_revoked_and_expired);

/// Proves the daily budget is never passed, refunds give calls back, and the server secret is
/// generated once and then kept.
async fn budgets_and_secret(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    let day = "2026-12-05";
    let over = store
        .charge_provider_calls("k1", day, 11, 10)
        .await
        .unwrap();
    assert_eq!(over, UsageCharge::OverBudget { used_today: 0 });
    let first = store.charge_provider_calls("k1", day, 6, 10).await.unwrap();
    assert_eq!(first, UsageCharge::Charged { used_today: 6 });
    let refused = store.charge_provider_calls("k1", day, 5, 10).await.unwrap();
    assert_eq!(refused, UsageCharge::OverBudget { used_today: 6 });
    let filled = store.charge_provider_calls("k1", day, 4, 10).await.unwrap();
    assert_eq!(filled, UsageCharge::Charged { used_today: 10 });
    store.refund_provider_calls("k1", day, 3).await.unwrap();
    assert_eq!(store.provider_calls_on("k1", day).await.unwrap(), 7);
    assert_eq!(store.provider_calls_on("k2", day).await.unwrap(), 0);

    let first_secret = store.auth_secret_or_insert("first").await.unwrap();
    let second_secret = store.auth_secret_or_insert("second").await.unwrap();
    assert_eq!(first_secret, "first");
    assert_eq!(second_secret, "first", "the first secret is kept");
}
on_both_backends!(budgets, budgets_and_secret);
