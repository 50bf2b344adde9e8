//! The Jaeger that `scripts/with-jaeger.sh` starts: where the traced service sends its spans
//! (OTLP over HTTP), and its query API, read back as plain spans.

use std::{collections::HashMap, time::Duration};

use serde_json::Value;

use super::wait::eventually;

/// The OTLP base URL to set as `OTEL_EXPORTER_OTLP_ENDPOINT`.
pub fn otlp_endpoint() -> String {
    std::env::var("JAEGER_OTLP_ENDPOINT")
        .expect("JAEGER_OTLP_ENDPOINT is not set: run the tests under scripts/with-jaeger.sh")
}

/// The environment of a service that traces everything to this Jaeger as `service`, and
/// sends its spans within a tenth of a second.
pub fn traced_env(service: &str) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_endpoint()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_owned()),
        ("OTEL_SERVICE_NAME", service.to_owned()),
        ("OTEL_TRACES_SAMPLER", "parentbased_always_on".to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ]
}

/// A random W3C trace id or span id of `bytes` bytes, as hex.
pub fn random_id(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>() | 1))
        .collect()
}

/// One span as Jaeger holds it.
#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    pub name: String,
    /// `CHILD_OF` references: the parent.
    pub parent: Option<(String, String)>,
    /// `FOLLOWS_FROM` references: links, as (trace id, span id).
    pub links: Vec<(String, String)>,
    pub tags: HashMap<String, Value>,
}

impl Span {
    /// A tag's value as text (numbers and booleans as they print).
    pub fn tag(&self, key: &str) -> Option<String> {
        self.tags.get(key).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }

    pub fn kind(&self) -> Option<String> {
        self.tag("span.kind")
    }
}

/// Jaeger's query API.
pub struct Jaeger {
    http: reqwest::Client,
    base: String,
}

impl Jaeger {
    pub fn shared() -> Self {
        Self {
            http: reqwest::Client::new(),
            base: std::env::var("JAEGER_QUERY_URL")
                .expect("JAEGER_QUERY_URL is not set: run the tests under scripts/with-jaeger.sh"),
        }
    }

    /// The spans of trace `trace_id` once `done` holds for them (for up to 20 s; the panic
    /// names the spans seen by then).
    pub async fn trace_until(&self, trace_id: &str, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let url = format!("{}/api/traces/{trace_id}", self.base);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let spans = self.spans(&url).await.unwrap_or_default();
            if done(&spans) {
                return spans;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for trace {trace_id} in Jaeger; it holds {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The spans of `service`'s traces holding an operation named `operation`, once `done`
    /// holds for them.
    pub async fn search_until(
        &self,
        service: &str,
        operation: &str,
        done: impl Fn(&[Span]) -> bool,
    ) -> Vec<Span> {
        let url = format!("{}/api/traces", self.base);
        eventually("the traces in Jaeger", || async {
            let response = self
                .http
                .get(&url)
                .query(&[
                    ("service", service),
                    ("operation", operation),
                    ("limit", "100"),
                ])
                .send()
                .await
                .ok()?;
            let spans = spans_of(&response.json::<Value>().await.ok()?);
            done(&spans).then_some(spans)
        })
        .await
    }

    async fn spans(&self, url: &str) -> Option<Vec<Span>> {
        let response = self.http.get(url).send().await.ok()?;
        if response.status() != 200 {
            return None;
        }
        Some(spans_of(&response.json::<Value>().await.ok()?))
    }
}

/// Every span of a query answer.
fn spans_of(answer: &Value) -> Vec<Span> {
    let empty = Vec::new();
    let traces = answer["data"].as_array().unwrap_or(&empty);
    traces
        .iter()
        .flat_map(|trace| trace["spans"].as_array().cloned().unwrap_or_default())
        .map(|span| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            let references = span["references"].as_array().cloned().unwrap_or_default();
            let of = |kind: &str| {
                references
                    .iter()
                    .filter(|r| r["refType"] == kind)
                    .map(|r| (text(&r["traceID"]), text(&r["spanID"])))
                    .collect::<Vec<_>>()
            };
            Span {
                trace_id: text(&span["traceID"]),
                span_id: text(&span["spanID"]),
                name: text(&span["operationName"]),
                parent: of("CHILD_OF").into_iter().next(),
                links: of("FOLLOWS_FROM"),
                tags: span["tags"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|t| (text(&t["key"]), t["value"].clone()))
                    .collect(),
            }
        })
        .collect()
}

/// The span named `name` among `spans`.
pub fn named<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
        panic!(
            "no span {name:?} among {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        )
    })
}
