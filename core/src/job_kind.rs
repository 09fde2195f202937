use crate::{ErrorCode, JobError};

/// The kinds of job Bulwark runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// `{ "texts": [...] }`, scored by the sentiment pool.
    SentimentAnalyze,
    /// `{ "provider", "prompt", "params"? }`, one completion through the provider path.
    ProviderComplete,
    /// An AI-visibility audit (`AuditRequest`), run by the `AuditRunner`.
    AuditRun,
}

impl JobKind {
    pub const ALL: [JobKind; 3] = [
        JobKind::SentimentAnalyze,
        JobKind::ProviderComplete,
        JobKind::AuditRun,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::SentimentAnalyze => "sentiment.analyze",
            JobKind::ProviderComplete => "provider.complete",
            JobKind::AuditRun => "audit.run",
        }
    }

    /// Returns the kind named `name`, or a validation error listing the known kinds.
    pub fn parse(name: &str) -> Result<JobKind, JobError> {
        JobKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = JobKind::ALL.iter().map(|kind| kind.as_str()).collect();
                JobError::new(
                    ErrorCode::ValidationFailed,
                    format!(
                        "kind: unknown job kind `{name}`, expected one of: {}",
                        known.join(", ")
                    ),
                )
            })
    }
}
