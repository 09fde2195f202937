use serde::{Deserialize, Serialize};

/// AI-visibility audits (`[audits]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditsConfig {
    /// Provider calls one audit has in flight at most. Each provider's own bulkhead and rate
    /// limit still apply on top.
    pub concurrency: u32,
}

impl Default for AuditsConfig {
    fn default() -> Self {
        AuditsConfig { concurrency: 8 }
    }
}

/// Checks the `[audits]` section; returns the offending key and why.
pub(crate) fn validate_audits(audits: &AuditsConfig) -> Result<(), (&'static str, String)> {
    if !(1..=256).contains(&audits.concurrency) {
        return Err((
            "audits.concurrency",
            format!("must be between 1 and 256, got {}", audits.concurrency),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the default is valid and a zero or huge concurrency is refused, naming the key.
    #[test]
    fn concurrency_bounds() {
        assert!(validate_audits(&AuditsConfig::default()).is_ok());
        for concurrency in [0, 257] {
            let (key, _) = validate_audits(&AuditsConfig { concurrency }).unwrap_err();
            assert_eq!(key, "audits.concurrency");
        }
    }
}
