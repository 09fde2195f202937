//! The backup and restore scripts of docs/operations/backup.md against the real PostgreSQL:
//! what a node stored survives a dump and a restore into a new database, and a damaged dump,
//! an edited manifest or a non-empty target is refused.

use std::path::Path;
use std::process::Command;

use bulwark_core::now_ms;
use bulwark_store::testsuite::{TestBackend, TestDatabase, postgres_url};
use bulwark_store::{
    JobStatus, LeaseRef, MisfirePolicy, NewDeadLetter, NewJob, OverlapPolicy, ScheduleSpec,
    ScheduleStatus, ScheduleTrigger, ScheduleWrite, Store, StoreParams,
};
use serde_json::json;

/// Runs one of the scripts; returns its exit code and what it printed.
fn run_script(script: &str, args: &[&str]) -> (i32, String) {
    let output = Command::new(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("scripts")
            .join(script),
    )
    .args(args)
    .env_remove("DATABASE_URL")
    .env_remove("DATABASE_URL_FILE")
    .output()
    .unwrap_or_else(|error| panic!("{script} runs: {error}"));
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), printed)
}

/// A database of the local server that does not exist yet, reached with the same search path
/// as `source` (the test schema its dump holds); dropped when the value is.
struct RestoreTarget {
    name: String,
    url: String,
}

impl RestoreTarget {
    fn new(source: &TestDatabase) -> RestoreTarget {
        let name = format!("bulwark_restore_{}", uuid::Uuid::now_v7().simple());
        let server = postgres_url();
        let (base, _) = server
            .rsplit_once('/')
            .expect("the test URL names a database");
        let options = source
            .url
            .split_once('?')
            .map(|(_, query)| query.to_owned())
            .expect("a test schema's URL sets its search path");
        RestoreTarget {
            url: format!("{base}/{name}?{options}"),
            name,
        }
    }
}

impl Drop for RestoreTarget {
    fn drop(&mut self) {
        let _ = Command::new("dropdb")
            .args([
                "--if-exists",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                &self.name,
            ])
            .status();
    }
}

/// Stores what a node would: jobs in several states, a schedule and a dead letter. Returns
/// the ids to find again.
async fn fill(store: &Store) -> (Vec<String>, String, String) {
    let mut job_ids = Vec::new();
    for index in 0..5 {
        let mut new_job = NewJob::new(
            "sentiment.analyze",
            json!({"texts": [format!("backed up {index}")]}),
            3,
        );
        new_job.idempotency_key = Some(format!("backup-{index}"));
        let job = store.insert_job(&new_job).await.unwrap();
        job_ids.push(job.job().id.clone());
    }
    let claimed = store
        .claim_jobs("backup-node", now_ms() + 60_000, 2)
        .await
        .unwrap();
    store
        .complete_job(
            LeaseRef::of(&claimed[0], "backup-node"),
            &json!({"scores": [0.9]}),
        )
        .await
        .unwrap();
    let schedule = match store
        .insert_schedule(
            &ScheduleSpec {
                name: "nightly-backup-check".to_owned(),
                kind: "sentiment.analyze".to_owned(),
                payload: json!({"texts": ["scheduled"]}),
                trigger: ScheduleTrigger::Interval {
                    every_ms: 86_400_000,
                    anchor_ms: now_ms(),
                },
                status: ScheduleStatus::Active,
                misfire_policy: MisfirePolicy::Skip,
                catch_up_window_ms: 0,
                overlap_policy: OverlapPolicy::QueueOne,
                max_consecutive_failures: 0,
                next_fire_at_ms: Some(now_ms() + 86_400_000),
            },
            now_ms(),
        )
        .await
        .unwrap()
    {
        ScheduleWrite::Stored(schedule) => schedule.id,
        other => panic!("schedule not stored: {other:?}"),
    };
    store
        .upsert_dead_letter(&NewDeadLetter {
            source: "local",
            source_key: format!("local:{}", job_ids[4]),
            job_id: job_ids[4].clone(),
            queue: "sentiment.analyze".to_owned(),
            kind: "sentiment.analyze".to_owned(),
            message: "{}".to_owned(),
            headers: None,
            error_code: "VALIDATION_FAILED".to_owned(),
            error_message: "kept for the backup test".to_owned(),
            retriable: false,
            request_id: None,
            trace_id: None,
            status: "parked",
            next_retry_at_ms: None,
            dead_at_ms: now_ms(),
        })
        .await
        .unwrap();
    let letter = store
        .get_dead_letter_by_key(&format!("local:{}", job_ids[4]))
        .await
        .unwrap()
        .expect("the dead letter is stored");
    (job_ids, schedule, letter.id)
}

/// Proves a backup restores into a new database with every job (in its state), the schedule
/// and the dead letter, that the restored database opens as a store (its migrations complete),
/// and that the restore refuses a damaged dump (exit 1, nothing restored), a manifest whose
/// counts were edited (exit 3) and a target that already holds tables (exit 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_every_job_schedule_and_dead_letter() {
    let source = TestDatabase::create(TestBackend::Postgres).await;
    let store = source.open().await;
    let (job_ids, schedule_id, letter_id) = fill(&store).await;
    let folder = std::env::temp_dir().join(format!("bulwark-backup-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&folder).unwrap();
    let dump = folder.join("bulwark.dump");
    let dump_arg = dump.to_str().unwrap();

    let (code, printed) = run_script("backup.sh", &[&source.url, dump_arg]);
    assert_eq!(code, 0, "backup: {printed}");
    assert!(folder.join("bulwark.dump.sha256").exists());
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(folder.join("bulwark.dump.manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest["jobs_by_status"],
        json!({"queued": 3, "running": 1, "succeeded": 1, "failed": 0, "dead": 0, "cancelled": 0}),
        "the manifest counts what was stored: {manifest}"
    );
    assert_eq!(manifest["tables"]["schedules"], 1);
    assert_eq!(manifest["tables"]["dead_letters"], 1);

    let target = RestoreTarget::new(&source);
    let (code, printed) = run_script("restore.sh", &[dump_arg, &target.url]);
    assert_eq!(code, 0, "restore: {printed}");
    let restored = Store::open(&StoreParams {
        url: target.url.clone(),
        max_connections: 2,
        connect_timeout: std::time::Duration::from_secs(5),
    })
    .await
    .expect("the restored database opens, its migrations already applied");
    for id in &job_ids {
        let original = store.get_job(id).await.unwrap().unwrap();
        let copy = restored.get_job(id).await.unwrap().expect("job restored");
        assert_eq!(copy.status, original.status, "{id}");
        assert_eq!(copy.payload, original.payload, "{id}");
        assert_eq!(copy.attempts, original.attempts, "{id}");
    }
    let statuses: Vec<JobStatus> = {
        let mut statuses = Vec::new();
        for id in &job_ids {
            statuses.push(restored.get_job(id).await.unwrap().unwrap().status);
        }
        statuses
    };
    assert!(statuses.contains(&JobStatus::Succeeded) && statuses.contains(&JobStatus::Queued));
    assert!(statuses.contains(&JobStatus::Running), "{statuses:?}");
    let schedule = restored.get_schedule(&schedule_id).await.unwrap();
    assert_eq!(
        schedule.expect("schedule restored").name,
        "nightly-backup-check"
    );
    assert!(
        restored
            .get_dead_letter(&letter_id)
            .await
            .unwrap()
            .is_some()
    );
    restored.close().await;

    let (code, printed) = run_script("restore.sh", &[dump_arg, &target.url]);
    assert_eq!(code, 1, "a target that holds tables is refused: {printed}");

    let manifest_path = folder.join("bulwark.dump.manifest.json");
    let manifest = std::fs::read_to_string(&manifest_path).unwrap();
    let mut edited: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    edited["tables"]["schedules"] = json!(2);
    std::fs::write(
        &manifest_path,
        serde_json::to_string_pretty(&edited).unwrap(),
    )
    .unwrap();
    let edited_target = RestoreTarget::new(&source);
    let (code, printed) = run_script("restore.sh", &[dump_arg, &edited_target.url]);
    assert_eq!(code, 3, "counts that differ from the manifest: {printed}");
    std::fs::write(&manifest_path, manifest).unwrap();

    let mut bytes = std::fs::read(&dump).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&dump, bytes).unwrap();
    let damaged_target = RestoreTarget::new(&source);
    let (code, printed) = run_script("restore.sh", &[dump_arg, &damaged_target.url]);
    assert_eq!(code, 1, "a damaged dump is refused: {printed}");
    assert!(
        !database_exists(&damaged_target.name),
        "nothing is restored from a damaged dump"
    );
    std::fs::remove_dir_all(&folder).unwrap();
}

/// Returns whether the local server has a database of this name.
fn database_exists(name: &str) -> bool {
    let output = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-tAc",
            &format!("SELECT 1 FROM pg_database WHERE datname = '{name}'"),
        ])
        .output()
        .expect("psql runs");
    String::from_utf8_lossy(&output.stdout).trim() == "1"
}
