use std::collections::BTreeMap;

/// The priority of a job whose submission and kind name none (and of rows stored before
/// priorities).
pub const DEFAULT_JOB_PRIORITY: u8 = 5;

/// What a kind's jobs get when their submission does not say (`[jobs.kinds.<kind>]`), and
/// how many of them may run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KindDefaults {
    pub priority: Option<u8>,
    pub timeout_ms: Option<i64>,
    pub max_attempts: Option<u32>,
    pub limits: KindLimits,
}

/// How many jobs of a kind may start, enforced through the store's gate of the kind, so they
/// hold across every node that shares the database, whatever carried the jobs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KindLimits {
    /// At most this many running (claimed) across all nodes.
    pub max_running: Option<u32>,
    /// At most this many running on one node.
    pub max_running_per_node: Option<u32>,
    /// At most this many starts per second across all nodes, with bursts of up to one
    /// second's worth (at least one start).
    pub max_starts_per_second: Option<f64>,
}

impl KindLimits {
    /// Returns true when any limit is set: the kind's jobs start only through its gate.
    pub fn is_limited(&self) -> bool {
        self.max_running.is_some()
            || self.max_running_per_node.is_some()
            || self.max_starts_per_second.is_some()
    }
}

/// A limited kind and its limits.
#[derive(Debug, Clone, PartialEq)]
pub struct KindGate {
    pub kind: String,
    pub limits: KindLimits,
}

/// The defaults every path that creates jobs applies (HTTP, schedules, broker messages): a
/// kind's own, else the node's.
#[derive(Debug, Clone, PartialEq)]
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

    /// Returns the gate of `kind` when it is limited.
    pub fn gate_of(&self, kind: &str) -> Option<KindGate> {
        let limits = self.of(kind).limits;
        limits.is_limited().then(|| KindGate {
            kind: kind.to_owned(),
            limits,
        })
    }

    /// Returns the gates of every limited kind, by kind name.
    pub fn gates(&self) -> Vec<KindGate> {
        self.kinds
            .keys()
            .filter_map(|kind| self.gate_of(kind))
            .collect()
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
                limits: KindLimits::default(),
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
        assert!(defaults.gates().is_empty(), "no kind is limited");
    }

    /// Proves only kinds with a limit get a gate.
    #[test]
    fn only_limited_kinds_have_a_gate() {
        let mut defaults = JobDefaults::new(5);
        defaults.kinds.insert(
            "audit.run".to_owned(),
            KindDefaults {
                limits: KindLimits {
                    max_running: Some(2),
                    ..KindLimits::default()
                },
                ..KindDefaults::default()
            },
        );
        defaults.kinds.insert(
            "sentiment.analyze".to_owned(),
            KindDefaults {
                priority: Some(7),
                ..KindDefaults::default()
            },
        );
        let gates = defaults.gates();
        assert_eq!(gates.len(), 1, "{gates:?}");
        assert_eq!(gates[0].kind, "audit.run");
        assert_eq!(gates[0].limits.max_running, Some(2));
        assert!(defaults.gate_of("sentiment.analyze").is_none());
    }
}
