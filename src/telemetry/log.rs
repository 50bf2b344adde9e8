//! Log lines, on stdout: human-readable text, or one JSON object per line that, while tracing is on,
//! carries the `trace_id` and `span_id` of the span the line was logged in.

use std::fmt;

use clap::ValueEnum;
use serde_json::{Map, Value};
use tracing::{Event, Subscriber, field::Field};
use tracing_subscriber::{
    Layer,
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    registry::LookupSpan,
};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The layer that writes log lines to stdout in `format`; `traced`: JSON lines name the
/// trace and span they were logged in.
pub(super) fn layer<S>(format: LogFormat, traced: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stdout);
    match format {
        LogFormat::Text => Box::new(lines),
        // A JSON line names its span but not the span's fields, so they are never formatted.
        LogFormat::Json => Box::new(
            lines
                .fmt_fields(NoFields)
                .event_format(JsonLines { traced }),
        ),
    }
}

/// One JSON object per event: `timestamp`, `level`, `target`, `fields`, the current span's
/// name as `span`, and `trace_id` / `span_id` of the innermost traced span around it (a
/// `tracing` span, else the request's server span).
struct JsonLines {
    traced: bool,
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = Map::new();
        event.record(&mut Fields(&mut fields));
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        );
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        line.insert("fields".into(), Value::Object(fields));
        let mut traced = None;
        if let Some(scope) = ctx.event_scope() {
            let mut scope = scope.peekable();
            if let Some(span) = scope.peek() {
                line.insert("span".into(), span.name().into());
            }
            if self.traced {
                let dispatch = tracing::dispatcher::get_default(Clone::clone);
                traced = scope.find_map(|span| {
                    let cx = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)?;
                    ids_of_context(&cx)
                });
            }
        }
        // Outside any traced `tracing` span, a request's server span is the current context.
        if self.traced && traced.is_none() {
            traced = ids_of_context(&opentelemetry::Context::current());
        }
        if let Some((trace, span)) = traced {
            line.insert("trace_id".into(), trace.into());
            line.insert("span_id".into(), span.into());
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// The trace and span ids of a context's span, as lowercase hex, when it has a valid one.
pub(super) fn ids_of_context(cx: &opentelemetry::Context) -> Option<(String, String)> {
    use opentelemetry::trace::TraceContextExt;
    let span = cx.span();
    let context = span.span_context();
    context.is_valid().then(|| {
        (
            context.trace_id().to_string(),
            context.span_id().to_string(),
        )
    })
}

/// Formats no span fields: what the fmt layer keeps of each span for the JSON lines.
struct NoFields;

impl<'writer> FormatFields<'writer> for NoFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        _: Writer<'writer>,
        _: R,
    ) -> fmt::Result {
        Ok(())
    }
}

/// Collects an event's fields as JSON values, the message as `message`.
struct Fields<'a>(&'a mut Map<String, Value>);

impl tracing::field::Visit for Fields<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}
