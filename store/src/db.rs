use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::Sqlite;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tracing::info;

use crate::StoreError;

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// What a [`Store`] is opened with.
#[derive(Debug, Clone)]
pub struct StoreParams {
    /// `sqlite://path` (created if missing) or `postgres://...`.
    pub url: String,
    pub max_connections: u32,
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same expression against whichever pool the store holds: `$pool` is bound to a
/// `&SqlitePool` in one arm and a `&PgPool` in the other, so the SQL must suit both dialects.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            $crate::db::Pool::Sqlite($pool) => $body,
            $crate::db::Pool::Postgres($pool) => $body,
        }
    };
    // The same body, with `$sql` bound to the statement written for the pool's backend.
    ($store:expr, $pool:ident, $sql:ident = [$sqlite:expr, $postgres:expr] => $body:expr) => {
        match &$store.pool {
            $crate::db::Pool::Sqlite($pool) => {
                let $sql = $sqlite;
                $body
            }
            $crate::db::Pool::Postgres($pool) => {
                let $sql = $postgres;
                $body
            }
        }
    };
}
pub(crate) use with_pool;

/// A connection pool on SQLite or PostgreSQL. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) pool: Pool,
}

impl Store {
    /// Opens a pool without touching the schema. SQLite files and their folder are created.
    pub async fn connect(params: &StoreParams) -> Result<Store, StoreError> {
        let scheme = params
            .url
            .split_once("://")
            .map(|(scheme, _)| scheme)
            .unwrap_or("");
        let pool = match scheme {
            "sqlite" => Pool::Sqlite(connect_sqlite(params).await?),
            "postgres" | "postgresql" => {
                let options = PgConnectOptions::from_str(&params.url)
                    .map_err(|error| StoreError::invalid_url("postgres url", error))?;
                let pool = PgPoolOptions::new()
                    .max_connections(params.max_connections)
                    .acquire_timeout(params.connect_timeout)
                    .connect_with(options)
                    .await?;
                Pool::Postgres(pool)
            }
            other => return Err(StoreError::UnsupportedScheme(other.to_owned())),
        };
        Ok(Store { pool })
    }

    /// Opens a pool and applies any pending migrations.
    pub async fn open(params: &StoreParams) -> Result<Store, StoreError> {
        let store = Store::connect(params).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Applies pending migrations; safe to run from several processes at once.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.pool {
            Pool::Sqlite(pool) => SQLITE_MIGRATOR.run(pool).await?,
            Pool::Postgres(pool) => POSTGRES_MIGRATOR.run(pool).await?,
        }
        info!(
            backend = self.backend().as_str(),
            "database migrations applied"
        );
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        match &self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Returns Ok when a round trip to the database succeeds.
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// Returns the number of transactions committed in the current database since the
    /// server's statistics were reset (`pg_stat_database.xact_commit`), for capacity
    /// measurements; `None` on SQLite.
    pub async fn committed_transactions(&self) -> Result<Option<i64>, StoreError> {
        const COMMITS: &str =
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()";
        match &self.pool {
            Pool::Postgres(pool) => Ok(Some(sqlx::query_scalar(COMMITS).fetch_one(pool).await?)),
            Pool::Sqlite(_) => Ok(None),
        }
    }

    /// Closes the pool, waiting for checked-out connections to come back.
    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await);
    }
}

/// Creates a missing database file owner-only before SQLite opens it: it holds every job's
/// payload and result and the API key digests, and SQLite gives its `-wal` and `-shm` files
/// the database file's mode. An existing file keeps its mode.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error),
    }
}

async fn connect_sqlite(params: &StoreParams) -> Result<SqlitePool, StoreError> {
    let options = SqliteConnectOptions::from_str(&params.url)
        .map_err(|error| StoreError::invalid_url("sqlite url", error))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10));
    let filename = options.get_filename();
    if let Some(parent) = filename.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|error| {
                StoreError::invalid_url(
                    format!("cannot create database folder {}", parent.display()),
                    error,
                )
            })?;
    }
    if filename != Path::new(":memory:") {
        create_private_file(filename).map_err(|error| {
            StoreError::invalid_url(
                format!("cannot create database file {}", filename.display()),
                error,
            )
        })?;
    }
    let pool = SqlitePoolOptions::new()
        .max_connections(params.max_connections)
        .acquire_timeout(params.connect_timeout)
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// Runs one row-returning statement per request on SQLite (in-process, so a statement costs no
/// round trip) and collects the rows: straight on the pool for a lone request, else in one
/// transaction, so a batch pays one commit.
pub(crate) async fn sqlite_rows_each<'q, Request, Row>(
    pool: &SqlitePool,
    requests: &'q [Request],
    statement: impl Fn(
        &'q Request,
    )
        -> sqlx::query::QueryAs<'q, Sqlite, Row, <Sqlite as sqlx::Database>::Arguments>,
) -> Result<Vec<Row>, StoreError>
where
    Row: Send + Unpin + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>,
{
    if let [request] = requests {
        return Ok(statement(request)
            .fetch_optional(pool)
            .await?
            .into_iter()
            .collect());
    }
    let mut transaction = pool.begin().await?;
    let mut rows = Vec::with_capacity(requests.len());
    for request in requests {
        rows.extend(statement(request).fetch_optional(&mut *transaction).await?);
    }
    transaction.commit().await?;
    Ok(rows)
}

impl Store {
    /// Runs one statement built at run time. Only for fixed administrative statements whose
    /// parts come from this program (test schemas), never from user input.
    #[cfg(feature = "testsuite")]
    pub(crate) async fn execute_raw(&self, statement: &str) -> Result<(), StoreError> {
        let statement = sqlx::AssertSqlSafe(statement.to_owned());
        with_pool!(self, pool => sqlx::query(statement).execute(pool).await.map(|_| ()))?;
        Ok(())
    }
}
