//! What a metric is, declared once beside the code that emits it: its name, type, unit, help
//! text, labels and (for histograms) bucket bounds. The binary describes every declared metric
//! to the recorder (`# HELP`, `# TYPE`, buckets) and `docs/metrics.md` is the catalog of them.

/// The unit a metric's values are in (the name's suffix says it too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricUnit {
    Seconds,
    Bytes,
    /// A count of things (jobs, texts, requests).
    Count,
    /// A value without unit: 1/0 flags, states, info series.
    None,
}

impl MetricUnit {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricUnit::Seconds => "seconds",
            MetricUnit::Bytes => "bytes",
            MetricUnit::Count => "count",
            MetricUnit::None => "",
        }
    }
}

/// How a metric's values combine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MetricType {
    /// Only goes up (restarts at zero with the process).
    Counter,
    /// Set to the current value.
    Gauge,
    /// Observations counted into these cumulative buckets (upper bounds, ascending).
    Histogram { buckets: &'static [f64] },
}

impl MetricType {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram { .. } => "histogram",
        }
    }
}

/// One metric as it is declared, described and documented.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricSpec {
    pub name: &'static str,
    pub metric_type: MetricType,
    pub unit: MetricUnit,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

impl MetricSpec {
    pub const fn counter(name: &'static str, help: &'static str) -> MetricSpec {
        MetricSpec {
            name,
            metric_type: MetricType::Counter,
            unit: MetricUnit::Count,
            help,
            labels: &[],
        }
    }

    pub const fn gauge(name: &'static str, unit: MetricUnit, help: &'static str) -> MetricSpec {
        MetricSpec {
            name,
            metric_type: MetricType::Gauge,
            unit,
            help,
            labels: &[],
        }
    }

    pub const fn histogram(
        name: &'static str,
        unit: MetricUnit,
        buckets: &'static [f64],
        help: &'static str,
    ) -> MetricSpec {
        MetricSpec {
            name,
            metric_type: MetricType::Histogram { buckets },
            unit,
            help,
            labels: &[],
        }
    }

    /// Returns the spec with another unit (a counter of seconds, say).
    pub const fn with_unit(self, unit: MetricUnit) -> MetricSpec {
        MetricSpec { unit, ..self }
    }

    /// Returns the spec with these label names (documentation; values stay bounded sets).
    pub const fn with_labels(self, labels: &'static [&'static str]) -> MetricSpec {
        MetricSpec { labels, ..self }
    }
}

/// Buckets for quick in-process and database steps: 100 µs to 10 s.
pub const FAST_SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Buckets for calls over the network and jobs, which may take minutes (an audit): 1 ms to 1 h.
pub const SLOW_SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    900.0, 3600.0,
];

/// Buckets for how late something happened against its plan (schedules): 1 ms to 10 min.
pub const LAG_SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0, 600.0,
];

/// Buckets for the size of a batch (texts, rows): 1 to 1,024, in powers of two.
pub const BATCH_SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves every bucket set rises strictly, as Prometheus requires of `le` bounds.
    #[test]
    fn bucket_sets_rise_strictly() {
        for buckets in [
            FAST_SECONDS_BUCKETS,
            SLOW_SECONDS_BUCKETS,
            LAG_SECONDS_BUCKETS,
            BATCH_SIZE_BUCKETS,
        ] {
            assert!(
                buckets.windows(2).all(|pair| pair[0] < pair[1]),
                "{buckets:?}"
            );
        }
    }
}
