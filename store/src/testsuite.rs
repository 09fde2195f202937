//! Isolated databases for tests: a fresh SQLite file, or a fresh schema in the PostgreSQL named
//! by `BULWARK_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`). Tests
//! never skip when PostgreSQL is unreachable: they fail, naming the URL.

use std::path::PathBuf;
use std::time::Duration;

use uuid::Uuid;

use crate::{Store, StoreParams};

/// The PostgreSQL server tests run against unless `BULWARK_TEST_DATABASE_URL` says otherwise.
pub const DEFAULT_TEST_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Which backend a test database lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestBackend {
    Sqlite,
    Postgres,
}

/// A database that exists only for one test and is removed when dropped.
#[derive(Debug)]
pub struct TestDatabase {
    /// A URL the service or a [`Store`] can connect with.
    pub url: String,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    SqliteDir(PathBuf),
    PostgresSchema { admin_url: String, schema: String },
}

/// Returns the PostgreSQL URL tests use.
pub fn postgres_url() -> String {
    std::env::var("BULWARK_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_TEST_POSTGRES_URL.into())
}

impl TestDatabase {
    /// Creates an empty database on `backend`. Panics, naming the URL, if PostgreSQL is down.
    pub async fn create(backend: TestBackend) -> TestDatabase {
        let unique = Uuid::now_v7().simple().to_string();
        match backend {
            TestBackend::Sqlite => {
                let dir = std::env::temp_dir().join(format!("bulwark-test-{unique}"));
                std::fs::create_dir_all(&dir).expect("create sqlite test folder");
                let url = format!("sqlite://{}", dir.join("bulwark.db").display());
                TestDatabase {
                    url,
                    cleanup: Cleanup::SqliteDir(dir),
                }
            }
            TestBackend::Postgres => {
                let admin_url = postgres_url();
                let schema = format!("bulwark_test_{unique}");
                let admin = connect(&admin_url).await;
                let create = format!("CREATE SCHEMA {schema}");
                admin
                    .execute_raw(&create)
                    .await
                    .unwrap_or_else(|error| panic!("failed to create schema {schema}: {error}"));
                admin.close().await;
                let separator = if admin_url.contains('?') { '&' } else { '?' };
                let url = format!("{admin_url}{separator}options=-c%20search_path%3D{schema}");
                TestDatabase {
                    url,
                    cleanup: Cleanup::PostgresSchema { admin_url, schema },
                }
            }
        }
    }

    /// Returns migrated store params for this database.
    pub fn params(&self) -> StoreParams {
        StoreParams {
            url: self.url.clone(),
            max_connections: 8,
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// Opens and migrates a store on this database.
    pub async fn open(&self) -> Store {
        Store::open(&self.params())
            .await
            .unwrap_or_else(|error| panic!("failed to open test store {}: {error}", self.url))
    }

    /// Runs one SQL statement on this database, e.g. to inject or repair a fault; panics,
    /// naming the statement, when it fails.
    pub async fn execute(&self, statement: &str) {
        let store = connect(&self.url).await;
        store
            .execute_raw(statement)
            .await
            .unwrap_or_else(|error| panic!("`{statement}` failed: {error}"));
        store.close().await;
    }
}

async fn connect(url: &str) -> Store {
    let params = StoreParams {
        url: url.to_owned(),
        max_connections: 1,
        connect_timeout: Duration::from_secs(10),
    };
    Store::connect(&params).await.unwrap_or_else(|error| {
        panic!("postgresql is unreachable at {url} (set BULWARK_TEST_DATABASE_URL): {error}")
    })
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::SqliteDir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::PostgresSchema { admin_url, schema } => {
                let admin_url = admin_url.clone();
                let drop_schema = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
                // Drop cannot await, and may run inside a runtime: use a thread with its own.
                let dropper = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build();
                    if let Ok(runtime) = runtime {
                        runtime.block_on(async {
                            let admin = connect(&admin_url).await;
                            let _ = admin.execute_raw(&drop_schema).await;
                            admin.close().await;
                        });
                    }
                });
                let _ = dropper.join();
            }
        }
    }
}

/// Runs one async test body, `async fn body(backend: TestBackend)`, as two tests in a module
/// named `$name`: `sqlite` and `postgres`. Add `multi_thread` for a two-worker runtime (tests
/// that boot a whole node).
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$body($crate::testsuite::TestBackend::Sqlite).await;
            }

            #[tokio::test]
            async fn postgres() {
                super::$body($crate::testsuite::TestBackend::Postgres).await;
            }
        }
    };
    ($name:ident, $body:ident, multi_thread) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body($crate::testsuite::TestBackend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$body($crate::testsuite::TestBackend::Postgres).await;
            }
        }
    };
}
