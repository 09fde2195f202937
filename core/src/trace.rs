/// Where a job came from and how to trace it across processes; travels in broker headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceContext {
    /// The W3C `traceparent` of the request that created the job.
    pub traceparent: Option<String>,
}

impl TraceContext {
    /// Continues the caller's trace when its `traceparent` is well-formed, else starts one, so
    /// every job has a trace id its messages and dead letter carry.
    pub fn continue_or_start(traceparent_opt: Option<String>) -> TraceContext {
        let traceparent = traceparent_opt
            .filter(|traceparent| trace_id_of(traceparent).is_some())
            .unwrap_or_else(new_traceparent);
        TraceContext {
            traceparent: Some(traceparent),
        }
    }

    /// Returns the trace id of its `traceparent`.
    pub fn trace_id(&self) -> Option<String> {
        self.traceparent.as_deref().and_then(trace_id_of)
    }
}

/// Returns the trace id of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`), or `None`
/// when it is not one.
pub fn trace_id_of(traceparent: &str) -> Option<String> {
    let mut fields = traceparent.split('-');
    let (_version, trace_id, span_id) = (fields.next()?, fields.next()?, fields.next()?);
    let is_hex = |text: &str, len: usize| {
        text.len() == len && text.bytes().all(|byte| byte.is_ascii_hexdigit())
    };
    (is_hex(trace_id, 32) && is_hex(span_id, 16)).then(|| trace_id.to_owned())
}

/// Returns a fresh W3C `traceparent` (version 00, sampled).
pub fn new_traceparent() -> String {
    traceparent_in(&uuid::Uuid::now_v7().simple().to_string())
}

/// Returns a `traceparent` with a new span id in the trace `trace_id`.
pub fn traceparent_in(trace_id: &str) -> String {
    // UUIDv7's last 16 hex digits are random; the first 16 carry the time.
    let span_text = uuid::Uuid::now_v7().simple().to_string();
    format!("00-{trace_id}-{}-01", &span_text[16..])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves a well-formed caller trace is continued and anything else starts a new one.
    #[test]
    fn traces_are_continued_or_started() {
        let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let continued = TraceContext::continue_or_start(Some(caller.to_owned()));
        assert_eq!(continued.traceparent.as_deref(), Some(caller));
        assert_eq!(
            continued.trace_id().as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [None, Some("garbage"), Some("00-short-00f067aa0ba902b7-01")] {
            let started = TraceContext::continue_or_start(bad.map(str::to_owned));
            let trace_id = started.trace_id().expect("a new trace");
            assert_ne!(trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        }
        let next = traceparent_in("4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            trace_id_of(&next).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_ne!(next, traceparent_in("4bf92f3577b34da6a3ce929d0e0e4736"));
    }
}
