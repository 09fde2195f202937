//! Metric names of the supervisors and the events that emit them. The supervisor label is the
//! subsystem name (a fixed set), never an instance-specific actor name.

use std::time::Duration;

use tracing::{error, info, warn};

use crate::supervisor::ExitKind;

pub const CHILD_EXITS_TOTAL: &str = "bulwark_actor_exits_total";
pub const RESTARTS_TOTAL: &str = "bulwark_actor_restarts_total";
pub const ESCALATIONS_TOTAL: &str = "bulwark_supervisor_escalations_total";

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
        metrics::counter!(CHILD_EXITS_TOTAL, "supervisor" => self.supervisor.to_owned(), "kind" => kind)
            .increment(1);
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
        metrics::counter!(RESTARTS_TOTAL, "supervisor" => self.supervisor.to_owned()).increment(1);
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
        metrics::counter!(ESCALATIONS_TOTAL, "supervisor" => self.supervisor.to_owned())
            .increment(1);
    }
}

pub const INCIDENTS_TOTAL: &str = "bulwark_incidents_total";
pub const INCIDENTS_DROPPED_TOTAL: &str = "bulwark_incidents_dropped_total";
pub const INCIDENT_WRITE_FAILURES_TOTAL: &str = "bulwark_incident_write_failures_total";

/// An incident was reported (whether or not its file could be written).
#[derive(Debug)]
pub struct IncidentRecorded<'a> {
    pub kind: crate::incident::IncidentKind,
    pub subsystem: &'a str,
}

impl IncidentRecorded<'_> {
    pub fn emit(&self) {
        metrics::counter!(
            INCIDENTS_TOTAL,
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
        metrics::counter!(INCIDENTS_DROPPED_TOTAL).increment(1);
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
        metrics::counter!(INCIDENT_WRITE_FAILURES_TOTAL).increment(1);
    }
}
