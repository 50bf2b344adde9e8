//! Traces over OTLP and the log lines that name them: it owns the tracer, the W3C trace
//! context on the wire, and the subscriber every `tracing` call goes to.
//!
//! Tracing is on when the standard OpenTelemetry variables name an endpoint
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) and
//! `OTEL_SDK_DISABLED` / `OTEL_TRACES_EXPORTER=none` do not turn it off. Then the requests'
//! server spans ([`ServerSpan`], made with the OpenTelemetry API) and the service's `tracing`
//! spans (target `scheduler`, level INFO and above, whatever `RUST_LOG` says about log lines)
//! go to that endpoint in batches over `http/protobuf` (the default) or `http/json`;
//! `OTEL_SERVICE_NAME` names the service (`scheduler` by default) and `OTEL_TRACES_SAMPLER`
//! (with `OTEL_TRACES_SAMPLER_ARG`) chooses what is sampled, parent-based always-on by
//! default. Off, no span is made and [`is_on`] is false, so the code that would make one
//! costs a load of an atomic.
//!
//! A trace context travels as a W3C `traceparent` string: in request headers and gRPC
//! metadata, in the stored job, run and outbox event (so a fire or a Kafka message sent later,
//! by another replica, continues or links to the trace of the change that caused it), and in
//! Kafka headers. This module imports nothing else of the crate.

mod export;
mod filter;
mod log;
mod server;

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, bail};
use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{SpanContext, TraceContextExt, TracerProvider as _},
};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Registry, layer::SubscriberExt, util::SubscriberInitExt};

pub use log::LogFormat;
pub use server::ServerSpan;

/// The service's name in traces when `OTEL_SERVICE_NAME` gives none.
pub const DEFAULT_SERVICE_NAME: &str = "scheduler";

/// Whether spans are being made and exported; set once by [`install`].
static ON: AtomicBool = AtomicBool::new(false);

/// Whether tracing is on: callers make spans only then.
pub fn is_on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// The installed telemetry: flushes the spans not yet exported when shut down.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is still buffered and stops the exporter (at most its timeout).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("Error: the last spans were not exported: {error}");
        }
    }
}

/// Installs the global subscriber: log lines in `format`, filtered by `RUST_LOG` (INFO by
/// default), and, when the environment turns tracing on, the span exporter. Must run inside a
/// tokio runtime (the exporter sends on it).
pub fn install(format: LogFormat) -> anyhow::Result<Telemetry> {
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = tracer_provider(&|name| std::env::var(name).ok())?;
    // Only the attributes the spans set themselves: no source location, thread, level,
    // target or busy/idle times, which every span would carry and nobody queries.
    let spans = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(DEFAULT_SERVICE_NAME))
            .with_location(false)
            .with_threads(false)
            .with_level(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            // Parents come from `tracing`'s own span tree; nothing reads OpenTelemetry's
            // thread-local context, so entering a span need not set it.
            .with_context_activation(false)
    });
    Registry::default()
        .with(filter::Admit {
            env,
            spans: provider.is_some(),
        })
        .with(log::layer(format, provider.is_some()))
        .with(spans)
        .try_init()
        .context("Failed to install the log and trace subscriber")?;
    if let Some(provider) = &provider {
        server::install(provider.tracer(DEFAULT_SERVICE_NAME));
    }
    ON.store(provider.is_some(), Ordering::Relaxed);
    Ok(Telemetry { provider })
}

/// The tracer provider the environment (read through `var`) asks for, or `None` when tracing
/// is off.
fn tracer_provider(
    var: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<SdkTracerProvider>> {
    let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    let endpoint =
        set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"));
    let disabled = set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let exporter_none = set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim() == "none");
    if endpoint.is_none() || disabled || exporter_none {
        return Ok(None);
    }
    if let Some(other) = set("OTEL_TRACES_EXPORTER").filter(|v| v.trim() != "otlp") {
        bail!("OTEL_TRACES_EXPORTER={other} is not supported: use otlp (or none)");
    }
    let protocol = match set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .as_deref()
        .map(str::trim)
    {
        None | Some("http/protobuf") => Protocol::HttpBinary,
        Some("http/json") => Protocol::HttpJson,
        Some(other) => bail!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={other} is not supported: use http/protobuf or http/json"
        ),
    };
    // The exporter reads the endpoint, headers and timeout from the same variables itself.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .with_http_client(export::Client::new()?)
        .build()
        .context("Failed to build the OTLP span exporter (check OTEL_EXPORTER_OTLP_ENDPOINT)")?;
    let name = set("OTEL_SERVICE_NAME").unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
    let resource = Resource::builder()
        .with_service_name(name)
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    // The sampler and the batch sizes and delays come from OTEL_TRACES_SAMPLER and OTEL_BSP_*.
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    ))
}

/// The `traceparent` of a span, when tracing is on and the span is being traced.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    if !is_on() {
        return None;
    }
    inject(&span.context())
}

/// The `traceparent` of the current span (the request, fire or message being handled): the
/// current `tracing` span's, else the current OpenTelemetry context's (a request's
/// [`ServerSpan`]).
pub fn current_traceparent() -> Option<String> {
    if !is_on() {
        return None;
    }
    inject(&tracing::Span::current().context()).or_else(|| inject(&Context::current()))
}

/// The W3C `traceparent` of a context's span, when it has a valid one.
fn inject(cx: &Context) -> Option<String> {
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = Injected(None);
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.0
}

/// Keeps the `traceparent` a propagator injects (a span context's state is not carried on).
struct Injected(Option<String>);

impl Injector for Injected {
    fn set(&mut self, key: &str, value: String) {
        if key == "traceparent" {
            self.0 = Some(value);
        }
    }
}

/// The two trace-context fields a propagator extracts from, borrowed.
struct Carried<'a> {
    traceparent: &'a str,
    tracestate: Option<&'a str>,
}

impl Extractor for Carried<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => Some(self.traceparent),
            "tracestate" => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// The remote context a `traceparent` (and `tracestate`) names; an empty context for a
/// missing or malformed one, so a bad header starts a new trace rather than failing a call.
pub fn context_of(traceparent: Option<&str>, tracestate: Option<&str>) -> Context {
    let Some(traceparent) = traceparent else {
        return Context::new();
    };
    TraceContextPropagator::new().extract(&Carried {
        traceparent,
        tracestate,
    })
}

/// The span context a stored `traceparent` names, for a link; `None` when it names none.
pub fn span_context_of(traceparent: Option<&str>) -> Option<SpanContext> {
    let cx = context_of(traceparent, None);
    let span = cx.span().span_context().clone();
    span.is_valid().then_some(span)
}

/// Makes `span` continue the remote trace `traceparent` names (a new trace when it names
/// none). Call it before anything reads the span's context.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    let cx = context_of(traceparent, tracestate);
    if cx.span().span_context().is_valid() {
        // Refused only when the span already started, which the callers rule out.
        let _ = span.set_parent(cx);
    }
}

/// Links `span` to the trace `traceparent` names, when it names one.
pub fn link(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(cx) = span_context_of(traceparent) {
        span.add_link(cx);
    }
}

/// The trace and span ids of a span, as lowercase hex, when it is traced.
pub fn ids_of(span: &tracing::Span) -> Option<(String, String)> {
    log::ids_of_context(&span.context())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[tokio::test]
    async fn tracing_is_off_unless_an_endpoint_is_set_and_nothing_turns_it_off() {
        let on = "http://127.0.0.1:4318";
        let cases: [(&[(&str, &str)], bool); 6] = [
            (&[], false),
            (&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")], false),
            (&[("OTEL_EXPORTER_OTLP_ENDPOINT", on)], true),
            (&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", on)], true),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", on),
                    ("OTEL_SDK_DISABLED", "true"),
                ],
                false,
            ),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", on),
                    ("OTEL_TRACES_EXPORTER", "none"),
                ],
                false,
            ),
        ];
        for (vars, expected) in cases {
            let provider = tracer_provider(&env(vars)).unwrap();
            assert_eq!(provider.is_some(), expected, "{vars:?}");
        }
    }

    #[tokio::test]
    async fn an_unsupported_protocol_or_exporter_is_refused_by_name() {
        let on = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        for (vars, named) in [
            (
                [on, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
            ),
            (
                [on, ("OTEL_TRACES_EXPORTER", "zipkin")],
                "OTEL_TRACES_EXPORTER=zipkin",
            ),
        ] {
            let error = tracer_provider(&env(&vars)).unwrap_err().to_string();
            assert!(error.contains(named), "{error}");
        }
        for protocol in ["http/protobuf", "http/json"] {
            let vars = [on, ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)];
            assert!(tracer_provider(&env(&vars)).unwrap().is_some());
        }
    }

    #[test]
    fn a_traceparent_round_trips_and_garbage_names_no_trace() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = context_of(Some(parent), None);
        assert_eq!(inject(&cx).as_deref(), Some(parent));
        let linked = span_context_of(Some(parent)).unwrap();
        assert_eq!(
            linked.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        for bad in [
            "",
            "00-xyz",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ] {
            assert!(span_context_of(Some(bad)).is_none(), "{bad}");
            assert!(inject(&context_of(Some(bad), None)).is_none(), "{bad}");
        }
        assert!(span_context_of(None).is_none());
    }
}
