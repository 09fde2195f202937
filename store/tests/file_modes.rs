//! Files the store creates on disk are owner-only: they hold payloads, results and key digests.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use bulwark_store::{Store, StoreParams};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Proves a new SQLite database is created 0600 in a folder created 0700, and that SQLite's
/// write-ahead log, which holds the same rows, gets the database file's mode.
#[tokio::test]
async fn new_sqlite_database_is_owner_only() {
    let base = std::env::temp_dir().join(format!(
        "bulwark-store-modes-{}-{}",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    ));
    let folder = base.join("data");
    let file = folder.join("bulwark.db");
    let store = Store::open(&StoreParams {
        url: format!("sqlite://{}", file.display()),
        max_connections: 1,
        connect_timeout: Duration::from_secs(5),
    })
    .await
    .expect("store opens");
    store.ping().await.expect("store answers");
    assert_eq!(mode(&folder), 0o700, "database folder");
    assert_eq!(mode(&file), 0o600, "database file");
    let wal = folder.join("bulwark.db-wal");
    assert!(wal.exists(), "migrations wrote through the write-ahead log");
    assert_eq!(mode(&wal), 0o600, "write-ahead log");
    store.close().await;
    let _ = std::fs::remove_dir_all(&base);
}
