/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("failed to run migrations: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
    #[error("invalid database url: {0}")]
    InvalidUrl(String),
    /// The error of a statement shared by several callers (a group commit), given to each.
    #[error(transparent)]
    Shared(std::sync::Arc<StoreError>),
}

impl StoreError {
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
