//! Metric names of the audit crate and the events that emit them. Labels are bounded: providers
//! come from the configuration, statuses from a fixed set.

use bulwark_core::MetricSpec;
use tracing::warn;

pub const AUDIT_ITEMS_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_audit_items_total",
    "Audit items recorded, by provider and outcome (answered, failed)",
)
.with_labels(&["provider", "outcome"]);
pub const AUDITS_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_audits_total",
    "Audits finished, by status (succeeded, partial, failed)",
)
.with_labels(&["status"]);

/// One audit item was recorded. `provider` is a configured provider name (bounded by the
/// configuration), `code` a provider error code for failed items.
#[derive(Debug)]
pub struct AuditItemRecorded<'a> {
    pub provider: &'a str,
    /// `None` when the item was answered.
    pub code_opt: Option<&'a str>,
}

impl AuditItemRecorded<'_> {
    pub fn emit(&self) {
        let outcome = match self.code_opt {
            None => "answered",
            Some(code) => {
                warn!(provider = self.provider, code, "audit item failed");
                "failed"
            }
        };
        metrics::counter!(
            AUDIT_ITEMS_TOTAL.name,
            "provider" => self.provider.to_owned(),
            "outcome" => outcome
        )
        .increment(1);
    }
}

/// An audit reached a final status (`succeeded`, `partial` or `failed`).
#[derive(Debug)]
pub struct AuditFinished<'a> {
    pub audit_id: &'a str,
    pub status: &'static str,
    pub num_items: usize,
    pub num_failed: usize,
}

impl AuditFinished<'_> {
    pub fn emit(&self) {
        tracing::info!(
            audit_id = self.audit_id,
            status = self.status,
            num_items = self.num_items,
            num_failed = self.num_failed,
            "audit finished"
        );
        metrics::counter!(AUDITS_TOTAL.name, "status" => self.status).increment(1);
    }
}

/// Every metric this crate emits, for the recorder's descriptions and `docs/metrics.md`.
pub const METRICS: &[MetricSpec] = &[AUDIT_ITEMS_TOTAL, AUDITS_TOTAL];
