//! Messaging telemetry: the OpenTelemetry spans of publishing and receiving events, W3C trace
//! context carried in NATS headers, and the counters behind `/metrics`.
//!
//! Spans are `tracing` spans with the target [`SPAN_TARGET`]; the server turns them into
//! OpenTelemetry spans when an exporter is configured. Without one, no subscriber is interested in
//! that target, so the spans cost next to nothing, and trace context is passed through unchanged:
//! a publisher's `traceparent` reaches the consumer as it was.
//!
//! Span names and attributes follow the OpenTelemetry messaging conventions, with Windshift's span
//! names (`<subject> publish`, `<subject> receive`).

use opentelemetry::{
    Context,
    propagation::{Extractor, Injector},
    trace::TraceContextExt,
};
use tracing::{Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{format::Event, settle::Settle};

/// The `tracing` target of every messaging span, so the log output can leave them out.
pub const SPAN_TARGET: &str = "jetway_otel";

/// A W3C trace context as its two header values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceContext {
    /// `traceparent`.
    pub parent: Option<String>,
    /// `tracestate`.
    pub state: Option<String>,
}

impl TraceContext {
    /// The context as OpenTelemetry sees it, through the global propagator.
    fn extract(&self) -> Context {
        opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(self))
    }

    /// The context of `span`, if it has a valid one (that is, if spans are being recorded).
    fn of(span: &Span) -> Option<TraceContext> {
        // Without a subscriber for spans there is no context to read, and asking for it costs a
        // lookup for every delivered event.
        if span.is_disabled() {
            return None;
        }
        let context = span.context();
        if !context.span().span_context().is_valid() {
            return None;
        }
        let mut carrier = TraceContext::default();
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut carrier)
        });
        carrier.parent.is_some().then_some(carrier)
    }

    /// The context to send on: `span`'s when spans are recorded, else `self`, passed through.
    pub(crate) fn forward(self, span: &Span) -> TraceContext {
        TraceContext::of(span).unwrap_or(self)
    }
}

impl Extractor for TraceContext {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.parent.as_deref(),
            "tracestate" => self.state.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

impl Injector for TraceContext {
    fn set(&mut self, key: &str, value: String) {
        match key {
            "traceparent" => self.parent = Some(value),
            "tracestate" => self.state = Some(value).filter(|v| !v.is_empty()),
            _ => {}
        }
    }
}

/// The PRODUCER span of one publish, a child of the current span (the RPC).
pub(crate) fn publish_span(subject: &str) -> Span {
    tracing::info_span!(
        target: SPAN_TARGET,
        "publish",
        otel.name = format!("{subject} publish"),
        otel.kind = "producer",
        otel.status_code = Empty,
        otel.status_message = Empty,
        messaging.system = "nats",
        messaging.operation.type = "publish",
        messaging.operation = "publish",
        messaging.destination.name = subject,
        messaging.message.id = Empty,
    )
}

/// The CLIENT span of one request sent on `subject`, a child of the current span (the RPC). Its
/// context travels in the request's `traceparent` header.
pub(crate) fn request_span(subject: &str) -> Span {
    tracing::info_span!(
        target: SPAN_TARGET,
        "request",
        otel.name = format!("{subject} send"),
        otel.kind = "client",
        otel.status_code = Empty,
        otel.status_message = Empty,
        messaging.system = "nats",
        messaging.operation.type = "send",
        messaging.operation = "send",
        messaging.destination.name = subject,
    )
}

/// The SERVER span of one request handed to a processor, from its hand-over until the processor
/// answers; its parent is the context the request carries, set by the caller.
pub(crate) fn process_span(subject: &str) -> Span {
    tracing::info_span!(
        target: SPAN_TARGET,
        parent: None,
        "process",
        otel.name = format!("{subject} process"),
        otel.kind = "server",
        otel.status_code = Empty,
        otel.status_message = Empty,
        messaging.system = "nats",
        messaging.operation.type = "process",
        messaging.operation = "process",
        messaging.destination.name = subject,
    )
}

impl TraceContext {
    /// Makes `span` a child of this context, if it has one.
    pub(crate) fn adopt(&self, span: &Span) {
        if self.parent.is_some() {
            // Fails only when no OpenTelemetry layer is installed, and then there is nothing to link.
            span.set_parent(self.extract()).ok();
        }
    }
}

/// Opens the CONSUMER span of a delivered event, a child of the publisher's context that the event
/// carries, and gives the event the context to pass on to its subscriber: the span's when spans are
/// recorded, else the publisher's, unchanged. Every delivery path (Events, Fetch) goes through here,
/// so each carries trace context alike.
pub(crate) fn receive(event: &mut Event, consumer: &str) -> Span {
    let publisher = TraceContext {
        parent: event.trace_parent.take(),
        state: event.trace_state.take(),
    };
    let span = receive_span(&event.subject, event.id, consumer, &publisher);
    let trace = publisher.forward(&span);
    (event.trace_parent, event.trace_state) = (trace.parent, trace.state);
    span
}

/// The CONSUMER span of one delivered event, whose parent is the publisher's context.
fn receive_span(subject: &str, id: u64, consumer: &str, publisher: &TraceContext) -> Span {
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        parent: None,
        "receive",
        otel.name = format!("{subject} receive"),
        otel.kind = "consumer",
        otel.status_code = Empty,
        otel.status_message = Empty,
        messaging.system = "nats",
        messaging.operation.type = "receive",
        messaging.operation = "receive",
        messaging.destination.name = subject,
        messaging.consumer.group.name = consumer,
        messaging.message.id = id,
    );
    publisher.adopt(&span);
    span
}

/// Marks a span as succeeded.
pub(crate) fn ok(span: &Span) {
    span.record("otel.status_code", "ok");
}

/// Marks a span as failed, with a reason.
pub(crate) fn error(span: &Span, message: &str) {
    span.record("otel.status_code", "error");
    span.record("otel.status_message", message);
}

/// Records a settlement on the event's receive span: OK for an ack, an error for a reject.
pub(crate) fn settled(span: &Span, how: Settle) {
    match how {
        Settle::Ack => ok(span),
        Settle::Reject(_) => error(span, "event rejected"),
        Settle::RejectPermanently => error(span, "event permanently rejected"),
        // A ping settles nothing; the span goes on.
        Settle::Ping => {}
    }
}

/// Metric names, and the handles every delivery path (Events streams, Fetch) counts with.
pub mod metrics {
    use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

    use crate::settle::Settle;

    /// Publishes, labelled `result` = `ok`, `duplicate`, `conflict` or `error`.
    pub const PUBLISHES: &str = "jetway_publishes_total";
    /// Publish latency, from the call until JetStream's ack.
    pub const PUBLISH_DURATION: &str = "jetway_publish_duration_seconds";
    /// Events handed to clients, labelled by [`PATH`].
    pub const DELIVERED: &str = "jetway_events_delivered_total";
    /// Deliveries with an attempt above 1, labelled by [`PATH`].
    pub const REDELIVERED: &str = "jetway_events_redelivered_total";
    /// Events acked, labelled by [`PATH`].
    pub const ACKED: &str = "jetway_events_acked_total";
    /// Events rejected, labelled by [`PATH`] and `permanently` = `true` or `false`.
    pub const REJECTED: &str = "jetway_events_rejected_total";
    /// Events held for clients now, labelled by [`PATH`].
    pub const IN_FLIGHT: &str = "jetway_events_in_flight";
    /// Open Events subscriptions.
    pub const SUBSCRIPTIONS: &str = "jetway_subscriptions_active";
    /// 1 while connected to NATS, else 0.
    pub const NATS_CONNECTED: &str = "jetway_nats_connected";
    /// The label that tells the delivery paths apart; its values are [`Path::label`].
    pub const PATH: &str = "path";

    /// A way events reach clients. Each counts in the same metrics, under its own [`PATH`] label.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Path {
        /// Windshift's Events stream (the delivery engine).
        Events,
        /// Unary Fetch, settled by Ack and Reject.
        Fetch,
    }

    impl Path {
        const ALL: [Path; 2] = [Path::Events, Path::Fetch];

        /// The value of the [`PATH`] label.
        pub fn label(self) -> &'static str {
            match self {
                Path::Events => "events",
                Path::Fetch => "fetch",
            }
        }
    }

    /// Events held per path by this process. It changes with every delivery, so it is a plain
    /// integer rather than a `metrics` gauge (whose update is a compare-and-swap loop on a float plus
    /// a generation counter); [`refresh`] copies it into the [`IN_FLIGHT`] gauge.
    static EVENTS_IN_FLIGHT: [AtomicI64; 2] = [AtomicI64::new(0), AtomicI64::new(0)];
    /// Events delivered per path by this process, kept outside the registry for the same reason: a
    /// `metrics` counter update is two atomic additions (the value and a generation), and this one
    /// happens for every delivered event. [`refresh`] copies it into the [`DELIVERED`] counter.
    static EVENTS_DELIVERED: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

    /// Brings the metrics that are kept outside the `metrics` registry up to date. Call it before
    /// rendering the registry.
    pub fn refresh() {
        for path in Path::ALL {
            let label = path.label();
            ::metrics::gauge!(IN_FLIGHT, PATH => label)
                .set(EVENTS_IN_FLIGHT[path as usize].load(Ordering::Relaxed) as f64);
            ::metrics::counter!(DELIVERED, PATH => label)
                .absolute(EVENTS_DELIVERED[path as usize].load(Ordering::Relaxed));
        }
    }

    /// The counts of one delivery path, with the handles resolved once (per subscription, or once
    /// for Fetch), so the hot path does no registry lookup. Every path counts through these
    /// methods, so the metrics mean the same on each.
    #[derive(Clone)]
    pub(crate) struct Delivery {
        path: Path,
        redelivered: ::metrics::Counter,
        acked: ::metrics::Counter,
        rejected: ::metrics::Counter,
        terminated: ::metrics::Counter,
    }

    impl Delivery {
        pub(crate) fn new(path: Path) -> Self {
            let label = path.label();
            Delivery {
                path,
                redelivered: ::metrics::counter!(REDELIVERED, PATH => label),
                acked: ::metrics::counter!(ACKED, PATH => label),
                rejected: ::metrics::counter!(REJECTED, PATH => label, "permanently" => "false"),
                terminated: ::metrics::counter!(REJECTED, PATH => label, "permanently" => "true"),
            }
        }

        /// Counts one event handed to a client on its `attempt`-th delivery, now held in flight.
        pub(crate) fn delivered(&self, attempt: u64) {
            EVENTS_DELIVERED[self.path as usize].fetch_add(1, Ordering::Relaxed);
            if attempt > 1 {
                self.redelivered.increment(1);
            }
            self.held(1);
        }

        /// Counts `n` events settled `how`, no longer held. Pings settle nothing.
        pub(crate) fn settled(&self, how: Settle, n: usize) {
            if n == 0 {
                return;
            }
            match how {
                Settle::Ack => self.acked.increment(n as u64),
                Settle::Reject(_) => self.rejected.increment(n as u64),
                Settle::RejectPermanently => self.terminated.increment(n as u64),
                Settle::Ping => return,
            }
            self.released(n);
        }

        fn held(&self, n: usize) {
            EVENTS_IN_FLIGHT[self.path as usize].fetch_add(n as i64, Ordering::Relaxed);
        }

        /// Counts `n` events no longer held without a settlement: expired, replaced by their
        /// redelivery, or their consumer gone.
        pub(crate) fn released(&self, n: usize) {
            EVENTS_IN_FLIGHT[self.path as usize].fetch_sub(n as i64, Ordering::Relaxed);
        }
    }
}
