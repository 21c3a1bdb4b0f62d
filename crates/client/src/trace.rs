//! Trace context propagation: every call carries the W3C `traceparent` (and `tracestate`) of the
//! caller's current span, so the server stores it with a published event (`WS-Trace-Parent`) and
//! consumers can continue the trace.
//!
//! The context comes from the current `tracing` span when the application runs
//! `tracing-opentelemetry`'s layer, else from the current OpenTelemetry context. The header is
//! written here rather than by a global propagator, so it is sent even when the application never
//! installed one: W3C trace context is what the Jetway server reads.

use opentelemetry::trace::{SpanContext, TraceContextExt};
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Adds `traceparent`, and `tracestate` when it is not empty, for the current span, if there is a
/// valid one.
pub(crate) fn inject(metadata: &mut MetadataMap) {
    let (parent, state) = headers();
    if let Some(value) = parent.and_then(|p| AsciiMetadataValue::try_from(p).ok()) {
        metadata.insert("traceparent", value);
    }
    if let Some(value) = state.and_then(|s| AsciiMetadataValue::try_from(s).ok()) {
        metadata.insert("tracestate", value);
    }
}

/// The `traceparent` and non-empty `tracestate` values of the current span, if there is a valid
/// one: what [`inject`] sends with a call, and what a request on the shared request stream carries.
pub(crate) fn headers() -> (Option<String>, Option<String>) {
    let Some(span_context) = current() else {
        return (None, None);
    };
    let state = span_context.trace_state().header();
    (
        Some(traceparent(&span_context)),
        (!state.is_empty()).then_some(state),
    )
}

/// The caller's current span context, if there is a valid one: what [`inject`] sends.
pub(crate) fn current() -> Option<SpanContext> {
    let from_tracing = tracing::Span::current().context();
    let span_context = match from_tracing.span().span_context() {
        valid if valid.is_valid() => valid.clone(),
        _ => opentelemetry::Context::current()
            .span()
            .span_context()
            .clone(),
    };
    span_context.is_valid().then_some(span_context)
}

/// The W3C `traceparent` header value: version 00, trace id, parent (span) id, flags.
fn traceparent(span_context: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        span_context.trace_id(),
        span_context.span_id(),
        span_context.trace_flags().to_u8()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};

    #[test]
    fn traceparent_follows_the_w3c_layout() {
        let context = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        assert_eq!(
            traceparent(&context),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
    }

    #[test]
    fn nothing_is_injected_without_a_span() {
        let mut metadata = MetadataMap::new();
        inject(&mut metadata);
        assert!(metadata.get("traceparent").is_none());
    }
}
