//! The schedule queries the scheduler wakes and claims with, against both SQLite and the real
//! PostgreSQL.

use bulwark_store::on_both_backends;
use bulwark_store::testsuite::{TestBackend, TestDatabase};
use bulwark_store::{
    MisfirePolicy, OverlapPolicy, ScheduleAdvance, ScheduleSpec, ScheduleStatus, ScheduleTrigger,
    ScheduleWrite, Store,
};
use serde_json::json;

const NOW_MS: i64 = 1_768_003_200_000;

/// Stores an active once schedule due at `slot_ms`; returns its id.
async fn create(store: &Store, name: &str, slot_ms: i64) -> String {
    let spec = ScheduleSpec {
        name: name.to_owned(),
        kind: "sentiment.analyze".to_owned(),
        payload: json!({"texts": ["scheduled"]}),
        trigger: ScheduleTrigger::Once { at_ms: slot_ms },
        status: ScheduleStatus::Active,
        misfire_policy: MisfirePolicy::Skip,
        catch_up_window_ms: 0,
        overlap_policy: OverlapPolicy::QueueOne,
        max_consecutive_failures: 0,
        next_fire_at_ms: Some(slot_ms),
    };
    match store.insert_schedule(&spec, NOW_MS).await.unwrap() {
        ScheduleWrite::Stored(schedule) => schedule.id,
        other => panic!("schedule not stored: {other:?}"),
    }
}

/// Proves the next wake-up slot is the earliest slot of an active schedule strictly after the
/// given time: paused schedules and slots at or before it do not count, and no schedule gives
/// none.
async fn next_slot_is_the_earliest_active_one_ahead(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    assert_eq!(store.next_schedule_slot_after(NOW_MS).await.unwrap(), None);
    create(&store, "due-now", NOW_MS).await;
    let paused = create(&store, "paused-soonest", NOW_MS + 1_000).await;
    store
        .pause_schedule(&paused, "operator", NOW_MS)
        .await
        .unwrap();
    create(&store, "later", NOW_MS + 5_000).await;
    create(&store, "latest", NOW_MS + 9_000).await;
    assert_eq!(
        store.next_schedule_slot_after(NOW_MS).await.unwrap(),
        Some(NOW_MS + 5_000)
    );
    assert_eq!(
        store.next_schedule_slot_after(NOW_MS - 1).await.unwrap(),
        Some(NOW_MS)
    );
    assert_eq!(
        store
            .next_schedule_slot_after(NOW_MS + 9_000)
            .await
            .unwrap(),
        None
    );
    store.close().await;
}

on_both_backends!(next_slot, next_slot_is_the_earliest_active_one_ahead);

/// Proves a claim takes the due schedules and those holding a `queue_one` slot (even with no
/// slot ahead), oldest slot first, and nothing that is not yet due or is claimed already.
async fn claim_takes_due_and_held_back_slots(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    let due = create(&store, "due", NOW_MS - 1_000).await;
    let due_earlier = create(&store, "due-earlier", NOW_MS - 2_000).await;
    create(&store, "not-yet", NOW_MS + 1_000).await;
    let held_back = create(&store, "held-back", NOW_MS - 3_000).await;
    let claimed = store
        .claim_due_schedules("node-a", NOW_MS - 3_000, NOW_MS + 30_000, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    // The slot fired; the next one is held back and none is ahead.
    let advance = ScheduleAdvance {
        next_fire_at_ms: None,
        last_fire_at_ms: Some(NOW_MS - 3_000),
        pending_fire_at_ms: Some(NOW_MS - 3_000),
        last_job_id: None,
        status: ScheduleStatus::Active,
        num_new_runs: 1,
        num_new_missed: 0,
    };
    assert!(
        store
            .advance_schedule(&held_back, "node-a", &advance, NOW_MS)
            .await
            .unwrap()
    );

    let claimed = store
        .claim_due_schedules("node-b", NOW_MS, NOW_MS + 30_000, 10)
        .await
        .unwrap();
    let mut ids: Vec<&str> = claimed
        .iter()
        .map(|schedule| schedule.id.as_str())
        .collect();
    let held_back_claimed = ids.contains(&held_back.as_str());
    ids.retain(|id| *id != held_back);
    assert!(
        held_back_claimed,
        "the held-back slot is claimed: {claimed:?}"
    );
    assert_eq!(
        ids,
        vec![due_earlier.as_str(), due.as_str()],
        "due ones, oldest first"
    );
    let again = store
        .claim_due_schedules("node-c", NOW_MS, NOW_MS + 30_000, 10)
        .await
        .unwrap();
    assert!(again.is_empty(), "claimed already: {again:?}");
    store.close().await;
}

on_both_backends!(claims, claim_takes_due_and_held_back_slots);
