use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Where a job came from and how to trace it across processes; travels in HTTP and broker
/// headers (W3C `traceparent` and `tracestate`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceContext {
    /// The W3C `traceparent` of the request that created the job.
    pub traceparent: Option<String>,
    /// The W3C `tracestate` that came with it, passed on unchanged.
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// Continues the caller's trace when its `traceparent` is well-formed, else starts one, so
    /// every job has a trace id its messages and dead letter carry. When OpenTelemetry traces
    /// the current span (which already continues the caller's trace), that span's context.
    pub fn continue_or_start(traceparent_opt: Option<String>) -> TraceContext {
        if let Some(current) = TraceContext::of_span(&tracing::Span::current()) {
            return current;
        }
        let traceparent = traceparent_opt
            .filter(|traceparent| trace_id_of(traceparent).is_some())
            .unwrap_or_else(new_traceparent);
        TraceContext {
            traceparent: Some(traceparent),
            tracestate: None,
        }
    }

    /// Returns the trace id of its `traceparent`.
    pub fn trace_id(&self) -> Option<String> {
        self.traceparent.as_deref().and_then(trace_id_of)
    }

    /// Returns the context of `span` when OpenTelemetry traces it (a valid span context), for
    /// the headers of what the span sends; `None` when tracing is off.
    pub fn of_span(span: &tracing::Span) -> Option<TraceContext> {
        let context = span.context();
        let span_ref = context.span();
        let span_context = span_ref.span_context();
        if !span_context.is_valid() {
            return None;
        }
        let tracestate = span_context.trace_state().header();
        Some(TraceContext {
            traceparent: Some(format!(
                "00-{}-{}-{:02x}",
                span_context.trace_id(),
                span_context.span_id(),
                span_context.trace_flags().to_u8()
            )),
            tracestate: (!tracestate.is_empty()).then_some(tracestate),
        })
    }

    /// Returns what to send downstream from inside `span`: the span's own context when
    /// OpenTelemetry traces it (so the receiver's span is its child), else this context as it
    /// came (the trace id still travels).
    pub fn onward_from(&self, span: &tracing::Span) -> TraceContext {
        TraceContext::of_span(span).unwrap_or_else(|| self.clone())
    }

    /// Returns the remote span context this `traceparent` (and `tracestate`) names; `None` when
    /// it is absent or malformed.
    pub fn span_context(&self) -> Option<SpanContext> {
        let traceparent = self.traceparent.as_deref()?;
        let mut fields = traceparent.split('-');
        let (version, trace_id, span_id, flags) = (
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
        );
        let is_well_formed = version == "00"
            && trace_id.len() == 32
            && span_id.len() == 16
            && flags.len() == 2
            && fields.next().is_none();
        if !is_well_formed {
            return None;
        }
        let trace_id = TraceId::from_hex(trace_id).ok()?;
        let span_id = SpanId::from_hex(span_id).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        let trace_state = self
            .tracestate
            .as_deref()
            .and_then(|header| header.parse::<TraceState>().ok())
            .unwrap_or_default();
        let span_context =
            SpanContext::new(trace_id, span_id, TraceFlags::new(flags), true, trace_state);
        span_context.is_valid().then_some(span_context)
    }

    /// Makes `span` a child of this (remote) context, so a trace continues across a process or
    /// a stored job. Does nothing when the context is absent or malformed, or tracing is off.
    pub fn adopt_as_parent(&self, span: &tracing::Span) {
        if let Some(span_context) = self.span_context() {
            let parent = opentelemetry::Context::new().with_remote_span_context(span_context);
            let _ = span.set_parent(parent);
        }
    }

    /// Links `span` to this context (a redelivery, a batch's callers): related, not its parent.
    pub fn link_from(&self, span: &tracing::Span) {
        if let Some(span_context) = self.span_context() {
            span.add_link(span_context);
        }
    }
}

/// Renames `span`'s OpenTelemetry span once its name is known (an HTTP route after routing);
/// does nothing when tracing is off.
pub fn rename_span(span: &tracing::Span, name: String) {
    span.context().span().update_name(name);
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

    /// Proves a `traceparent` and `tracestate` parse into the remote span context they name,
    /// and that malformed ones (bad version, lengths, zero ids) give none.
    #[test]
    fn traceparents_parse_into_span_contexts() {
        let context = TraceContext {
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned()),
            tracestate: Some("vendor=value".to_owned()),
        };
        let span_context = context.span_context().expect("a span context");
        assert_eq!(
            span_context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(span_context.span_id().to_string(), "00f067aa0ba902b7");
        assert!(span_context.is_sampled());
        assert!(span_context.is_remote());
        assert_eq!(span_context.trace_state().get("vendor"), Some("value"));
        for bad in [
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            let malformed = TraceContext {
                traceparent: Some(bad.to_owned()),
                tracestate: None,
            };
            assert!(malformed.span_context().is_none(), "{bad}");
        }
    }
}
