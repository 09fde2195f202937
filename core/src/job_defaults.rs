use std::collections::BTreeMap;

/// The priority of a job whose submission and kind name none (and of rows stored before
/// priorities).
pub const DEFAULT_JOB_PRIORITY: u8 = 5;

/// What a kind's jobs get when their submission does not say (`[jobs.kinds.<kind>]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindDefaults {
    pub priority: Option<u8>,
    pub timeout_ms: Option<i64>,
    pub max_attempts: Option<u32>,
}

/// The defaults every path that creates jobs applies (HTTP, schedules, broker messages): a
/// kind's own, else the node's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobDefaults {
    /// `jobs.max_attempts`.
    pub max_attempts: u32,
    /// By kind name.
    pub kinds: BTreeMap<String, KindDefaults>,
}

impl JobDefaults {
    /// Returns defaults with `max_attempts` for every kind and nothing per kind.
    pub fn new(max_attempts: u32) -> Self {
        JobDefaults {
            max_attempts,
            kinds: BTreeMap::new(),
        }
    }

    fn of(&self, kind: &str) -> KindDefaults {
        self.kinds.get(kind).copied().unwrap_or_default()
    }

    pub fn max_attempts_of(&self, kind: &str) -> u32 {
        self.of(kind).max_attempts.unwrap_or(self.max_attempts)
    }

    pub fn priority_of(&self, kind: &str) -> u8 {
        self.of(kind).priority.unwrap_or(DEFAULT_JOB_PRIORITY)
    }

    pub fn timeout_ms_of(&self, kind: &str) -> Option<i64> {
        self.of(kind).timeout_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves a kind's own defaults win, and a kind without any gets the node's.
    #[test]
    fn a_kinds_defaults_win_over_the_nodes() {
        let mut defaults = JobDefaults::new(5);
        defaults.kinds.insert(
            "audit.run".to_owned(),
            KindDefaults {
                priority: Some(2),
                timeout_ms: Some(600_000),
                max_attempts: Some(2),
            },
        );
        assert_eq!(defaults.priority_of("audit.run"), 2);
        assert_eq!(defaults.timeout_ms_of("audit.run"), Some(600_000));
        assert_eq!(defaults.max_attempts_of("audit.run"), 2);
        assert_eq!(
            defaults.priority_of("sentiment.analyze"),
            DEFAULT_JOB_PRIORITY
        );
        assert_eq!(defaults.timeout_ms_of("sentiment.analyze"), None);
        assert_eq!(defaults.max_attempts_of("sentiment.analyze"), 5);
    }
}
