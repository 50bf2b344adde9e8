//! Server spans, one per request, made with the OpenTelemetry API directly rather than through
//! `tracing`: a request's span has no `tracing` children (the spans made later, a Kafka send
//! or a fire, continue the `traceparent` stored with the change), so it needs none of the
//! subscriber's span bookkeeping, about a third of what tracing a request cost (BENCHMARKS.md,
//! "Tracing, third pass"). While the request's future runs, its span is OpenTelemetry's
//! current context, which is where the handlers' `traceparent` and the log lines' trace ids
//! come from.

use std::{borrow::Cow, future::Future, sync::OnceLock};

use opentelemetry::{
    Context, KeyValue,
    context::{FutureExt as _, WithContext},
    trace::{SpanKind, Status, TraceContextExt, Tracer as _},
};
use opentelemetry_sdk::trace::SdkTracer;

/// The tracer server spans are made with; set once, when tracing is on.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Makes server spans with `tracer` from now on.
pub(super) fn install(tracer: SdkTracer) {
    // A second install (only tests could make one) keeps the first tracer.
    let _ = TRACER.set(tracer);
}

/// A request's server span; it ends when [`ServerSpan::end`] is called or the last clone of
/// it is dropped.
#[derive(Debug, Clone)]
pub struct ServerSpan(Context);

impl ServerSpan {
    /// Starts a SERVER span named `name` with `attributes`, a child of the span `parent`
    /// holds (the caller's, a new trace when it holds none); `None` while tracing is off.
    pub fn start(
        name: impl Into<Cow<'static, str>>,
        attributes: Vec<KeyValue>,
        parent: &Context,
    ) -> Option<Self> {
        let tracer = TRACER.get()?;
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(tracer, parent);
        Some(Self(parent.with_span(span)))
    }

    /// `future`, with this span as the current context whenever it is polled.
    pub fn around<F: Future>(&self, future: F) -> WithContext<F> {
        future.with_context(self.0.clone())
    }

    /// Sets an attribute the span learns at the end, such as the response's status.
    pub fn record(&self, attribute: KeyValue) {
        self.0.span().set_attribute(attribute);
    }

    /// Marks the span as failed: the server's fault, not the caller's.
    pub fn fail(&self) {
        self.0.span().set_status(Status::error(""));
    }

    /// Ends the span now (the response is ready), whatever still holds a clone of it.
    pub fn end(self) {
        self.0.span().end();
    }
}
