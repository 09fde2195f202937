/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("failed to run migrations: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A stored value that cannot be read back as what it should be (written by another
    /// version, or by hand): `what` names the row and the field.
    #[error("stored row is corrupt: {what}: {source}")]
    Corrupt {
        what: String,
        #[source]
        source: BoxError,
    },
    /// The store broke one of its own rules: a statement answered other rows than asked, a
    /// group commit's writer stopped or panicked.
    #[error("store invariant broken: {0}")]
    Invariant(String),
    /// The database URL (or the SQLite file it names) cannot be used.
    #[error("invalid database url: {what}: {source}")]
    InvalidUrl {
        what: String,
        #[source]
        source: BoxError,
    },
    #[error("invalid database url: unsupported scheme `{0}` (use sqlite: or postgres:)")]
    UnsupportedScheme(String),
    /// The error of a statement shared by several callers (a group commit), given to each.
    #[error(transparent)]
    Shared(std::sync::Arc<StoreError>),
}

/// The source of an error whose cause can be of several types.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl StoreError {
    /// A stored value that cannot be read back: `what` names the row and field
    /// (`job 42: payload`), `source` says why.
    pub fn corrupt(what: impl Into<String>, source: impl Into<BoxError>) -> StoreError {
        StoreError::Corrupt {
            what: what.into(),
            source: source.into(),
        }
    }

    /// A database URL that cannot be used: `what` says which part, `source` why.
    pub fn invalid_url(what: impl Into<String>, source: impl Into<BoxError>) -> StoreError {
        StoreError::InvalidUrl {
            what: what.into(),
            source: source.into(),
        }
    }

    /// Returns true when the operation may succeed if tried again (the database was down or
    /// the pool exhausted), false for errors that will recur.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            StoreError::Shared(error) => error.is_retryable(),
            _ => false,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(error),
            sqlx::Error::Database(database_error) if is_transient(database_error.code()) => {
                StoreError::Unavailable(error)
            }
            _ => StoreError::Database(error),
        }
    }
}

/// SQLite busy/locked and PostgreSQL connection, shutdown and serialization classes.
fn is_transient(code_opt: Option<std::borrow::Cow<'_, str>>) -> bool {
    let Some(code) = code_opt else {
        return false;
    };
    matches!(
        code.as_ref(),
        "5" | "6" | "517" | "40001" | "40P01" | "57P01" | "57P03"
    ) || code.starts_with("08")
}
