//! Metric names of the supervisors and the events that emit them. The supervisor label is the
//! subsystem name (a fixed set), never an instance-specific actor name.

use std::time::Duration;

use bulwark_core::{MetricSpec, MetricUnit};
use tracing::{error, info, warn};

use crate::supervisor::ExitKind;

pub const CHILD_EXITS_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_actor_exits_total",
    "Supervised actors that stopped, by supervisor and kind of exit (normal, panic, error, hang, killed)",
).with_labels(&["supervisor", "kind"]);
pub const RESTARTS_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_actor_restarts_total",
    "Supervised actors started again, by supervisor",
)
.with_labels(&["supervisor"]);
pub const ESCALATIONS_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_supervisor_escalations_total",
    "Supervisors that exceeded their restart intensity and escalated to their parent",
)
.with_labels(&["supervisor"]);

/// A supervised child stopped.
#[derive(Debug)]
pub struct ChildExited<'a> {
    pub supervisor: &'a str,
    pub child: &'a str,
    pub kind: ExitKind,
    pub message: &'a str,
}

impl ChildExited<'_> {
    pub fn emit(&self) {
        let kind = self.kind.as_str();
        if self.kind == ExitKind::Normal {
            info!(
                supervisor = self.supervisor,
                child = self.child,
                kind,
                reason = self.message,
                "child stopped"
            );
        } else {
            error!(
                supervisor = self.supervisor,
                child = self.child,
                kind,
                error = self.message,
                "child failed"
            );
        }
        metrics::counter!(CHILD_EXITS_TOTAL.name, "supervisor" => self.supervisor.to_owned(), "kind" => kind)
            .increment(1);
    }
}

/// A supervisor started: its restart and escalation series are created at zero, so
/// `increase()` sees the first restart or escalation (a series born at 1 reads as none).
#[derive(Debug)]
pub struct SupervisorStarted<'a> {
    pub supervisor: &'a str,
}

impl SupervisorStarted<'_> {
    pub fn emit(&self) {
        for name in [RESTARTS_TOTAL.name, ESCALATIONS_TOTAL.name] {
            metrics::counter!(name, "supervisor" => self.supervisor.to_owned()).increment(0);
        }
    }
}

/// A supervised child was started again.
#[derive(Debug)]
pub struct ChildRestarted<'a> {
    pub supervisor: &'a str,
    pub child: &'a str,
}

impl ChildRestarted<'_> {
    pub fn emit(&self) {
        info!(
            supervisor = self.supervisor,
            child = self.child,
            "child restarted"
        );
        metrics::counter!(RESTARTS_TOTAL.name, "supervisor" => self.supervisor.to_owned())
            .increment(1);
    }
}

/// A supervisor gave up: too many restarts in its window. Its parent decides next.
#[derive(Debug)]
pub struct SupervisorEscalated<'a> {
    pub supervisor: &'a str,
    pub num_restarts: u32,
    pub within: Duration,
}

impl SupervisorEscalated<'_> {
    pub fn emit(&self) {
        warn!(
            supervisor = self.supervisor,
            num_restarts = self.num_restarts,
            within_ms = self.within.as_millis() as u64,
            "restart intensity exceeded, escalating to parent"
        );
        metrics::counter!(ESCALATIONS_TOTAL.name, "supervisor" => self.supervisor.to_owned())
            .increment(1);
    }
}

pub const INCIDENTS_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_incidents_total",
    "Incidents reported (crashes, hangs), whether or not their file was written",
)
.with_labels(&["kind", "subsystem"]);
pub const INCIDENTS_DROPPED_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_incidents_dropped_total",
    "Incidents not written because the incident queue was full",
);
pub const INCIDENT_WRITE_FAILURES_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_incident_write_failures_total",
    "Incident files that could not be written (full or read-only disk, permissions)",
);

/// An incident was reported (whether or not its file could be written).
#[derive(Debug)]
pub struct IncidentRecorded<'a> {
    pub kind: crate::incident::IncidentKind,
    pub subsystem: &'a str,
}

impl IncidentRecorded<'_> {
    pub fn emit(&self) {
        metrics::counter!(
            INCIDENTS_TOTAL.name,
            "kind" => self.kind.as_str(),
            "subsystem" => self.subsystem.to_owned()
        )
        .increment(1);
    }
}

/// The incident queue was full; the incident was counted but not written.
#[derive(Debug)]
pub struct IncidentDropped<'a> {
    pub id: &'a str,
}

impl IncidentDropped<'_> {
    pub fn emit(&self) {
        warn!(
            incident_id = self.id,
            "incident queue is full, dropping the incident"
        );
        metrics::counter!(INCIDENTS_DROPPED_TOTAL.name).increment(1);
    }
}

/// An incident file could not be written (full or read-only disk, permissions).
#[derive(Debug)]
pub struct IncidentWriteFailed<'a> {
    pub error: &'a std::io::Error,
}

impl IncidentWriteFailed<'_> {
    pub fn emit(&self) {
        error!(error = %self.error, "failed to write an incident file");
        metrics::counter!(INCIDENT_WRITE_FAILURES_TOTAL.name).increment(1);
    }
}

pub const INCIDENT_DIR_BYTES: MetricSpec = MetricSpec::gauge(
    "bulwark_incident_dir_bytes",
    MetricUnit::Bytes,
    "Bytes of incident files in this node's incident directory (pruned to incidents.max_bytes)",
);
pub const INCIDENT_DISK_FREE_BYTES: MetricSpec = MetricSpec::gauge(
    "bulwark_incident_disk_free_bytes",
    MetricUnit::Bytes,
    "Free bytes, for this process, on the filesystem of the incident directory",
);
pub const INCIDENT_DISK_SIZE_BYTES: MetricSpec = MetricSpec::gauge(
    "bulwark_incident_disk_size_bytes",
    MetricUnit::Bytes,
    "Size of the filesystem of the incident directory",
);

/// The incident directory's use and its filesystem's space, read when metrics are scraped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncidentDirRead {
    pub num_file_bytes: u64,
    pub num_free_bytes: u64,
    pub num_size_bytes: u64,
}

impl IncidentDirRead {
    /// Reads the directory's files and its filesystem (`statvfs`); an absent directory has no
    /// files, and its filesystem is its nearest existing parent's.
    pub fn of(dir: &std::path::Path) -> std::io::Result<IncidentDirRead> {
        let num_file_bytes = crate::incident::list_files(dir)?
            .iter()
            .map(|(_, num_bytes)| num_bytes)
            .sum();
        let existing = dir
            .ancestors()
            .find(|path| path.exists())
            .unwrap_or(std::path::Path::new("/"));
        let stats = nix::sys::statvfs::statvfs(existing).map_err(std::io::Error::from)?;
        let fragment = stats.fragment_size() as u64;
        Ok(IncidentDirRead {
            num_file_bytes,
            num_free_bytes: (stats.blocks_available() as u64).saturating_mul(fragment),
            num_size_bytes: (stats.blocks() as u64).saturating_mul(fragment),
        })
    }

    pub fn emit(&self) {
        metrics::gauge!(INCIDENT_DIR_BYTES.name).set(self.num_file_bytes as f64);
        metrics::gauge!(INCIDENT_DISK_FREE_BYTES.name).set(self.num_free_bytes as f64);
        metrics::gauge!(INCIDENT_DISK_SIZE_BYTES.name).set(self.num_size_bytes as f64);
    }
}

/// Every metric this crate emits, for the recorder's descriptions and `docs/metrics.md`.
pub const METRICS: &[MetricSpec] = &[
    CHILD_EXITS_TOTAL,
    RESTARTS_TOTAL,
    ESCALATIONS_TOTAL,
    INCIDENTS_TOTAL,
    INCIDENTS_DROPPED_TOTAL,
    INCIDENT_WRITE_FAILURES_TOTAL,
    INCIDENT_DIR_BYTES,
    INCIDENT_DISK_FREE_BYTES,
    INCIDENT_DISK_SIZE_BYTES,
];
