//! The requests of the one port, REST and gRPC, with OpenTelemetry's names: the middleware
//! [`observe`] wraps the whole router (outside access control, so refusals count) and times
//! each request and, while tracing is on, makes its server span.
//!
//! A REST request is observed when its response headers are ready, labelled with the route
//! template the router matched (`/api/v1/jobs/{id}`), never the raw path; a request no route
//! matched has an empty route. A gRPC call is observed at its final status, which comes in the
//! trailers at the end of its response stream (or in the headers of a trailers-only answer);
//! its method is the path only for a service the router knows and a status other than
//! UNIMPLEMENTED, so made-up method names all count as `_OTHER`.
//!
//! The server span continues the caller's W3C `traceparent` (an HTTP header, or gRPC metadata,
//! which travels as one), is named `{method} {route}` or `{service}/{method}`, holds the
//! semantic-convention attributes and nothing of the request's body, path ids or credentials,
//! and ends with the response (for gRPC, with its final status).

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use axum::{
    body::{Body, Bytes},
    extract::{MatchedPath, Request, State},
    http::{HeaderMap, Method, Uri, header},
    middleware::Next,
    response::Response,
};
use http_body::{Frame, SizeHint};
use tracing::{Instrument, Span, field::Empty};

use super::{Instruments, Metrics};
use crate::telemetry;

/// The middleware: times the request, traces it, and labels both by protocol.
pub async fn observe(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let traced = telemetry::is_on();
    let m = metrics.0.clone();
    if m.is_none() && !traced {
        return next.run(request).await;
    }
    let start = Instant::now();
    let routed = request.extensions().get::<MatchedPath>().cloned();
    if is_grpc(request.headers()) {
        // A clone of the URI shares its bytes: no copy of the path.
        let uri = request.uri().clone();
        let span = traced.then(|| rpc_span(&request, routed.is_some()));
        let response = run(next, request, span.as_ref()).await;
        let mut call = Call {
            m,
            method: routed.map(|_| uri),
            start,
            span,
        };
        if let Some(status) = grpc_status(response.headers()) {
            call.finish(status);
            return response;
        }
        return response.map(|body| {
            Body::new(Observed {
                inner: body,
                call: Some(call),
            })
        });
    }
    let method = method_label(request.method());
    let route = routed.as_ref().map_or("", MatchedPath::as_str);
    let span = traced.then(|| http_span(&request, method, route));
    let response = run(next, request, span.as_ref()).await;
    let status = response.status();
    if let Some(m) = m {
        m.http
            .with_label_values(&[method, route, status.as_str()])
            .observe(start.elapsed().as_secs_f64());
    }
    if let Some(span) = span {
        span.record("http.response.status_code", status.as_u16());
        if status.is_server_error() {
            span.record("otel.status_code", "ERROR");
        }
    }
    response
}

/// Runs the rest of the stack, inside `span` when there is one.
async fn run(next: Next, request: Request, span: Option<&Span>) -> Response {
    match span {
        Some(span) => next.run(request).instrument(span.clone()).await,
        None => next.run(request).await,
    }
}

/// The server span of a REST request, continuing the caller's trace.
fn http_span(request: &Request, method: &'static str, route: &str) -> Span {
    let name = if route.is_empty() {
        method.to_owned()
    } else {
        format!("{method} {route}")
    };
    let span = tracing::info_span!(
        "request",
        otel.name = name,
        otel.kind = "server",
        http.request.method = method,
        http.route = route,
        http.response.status_code = Empty,
        otel.status_code = Empty,
    );
    continue_caller_trace(&span, request.headers());
    span
}

/// The server span of a gRPC call, continuing the caller's trace; `known` when the router
/// has the method's service.
fn rpc_span(request: &Request, known: bool) -> Span {
    let path = request.uri().path().trim_start_matches('/');
    let (service, method) = match path.split_once('/') {
        Some((service, method)) if known => (service, method),
        _ => ("", ""),
    };
    let name = if service.is_empty() { "grpc" } else { path };
    let span = tracing::info_span!(
        "call",
        otel.name = name,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = Empty,
        otel.status_code = Empty,
    );
    continue_caller_trace(&span, request.headers());
    span
}

/// Makes `span` continue the `traceparent` (and `tracestate`) the caller sent, if any.
fn continue_caller_trace(span: &Span, headers: &HeaderMap) {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    telemetry::continue_trace(span, text("traceparent"), text("tracestate"));
}

/// Whether a request is a gRPC call, by its content type (as `grpc::edge` decides it too).
fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The method as OpenTelemetry names it: one of the standard ones, else `_OTHER`.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
        Method::TRACE,
        Method::CONNECT,
    ];
    const LABELS: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
    ];
    KNOWN
        .iter()
        .position(|known| known == method)
        .map_or("_OTHER", |i| LABELS[i])
}

/// The `grpc-status` of a header map, as its numeric text.
fn grpc_status(headers: &HeaderMap) -> Option<&str> {
    headers.get("grpc-status").and_then(|v| v.to_str().ok())
}

/// A gRPC call waiting for its final status.
struct Call {
    /// `None` with metrics off.
    m: Option<Arc<Instruments>>,
    /// The call's URI when a route matched it.
    method: Option<Uri>,
    start: Instant,
    /// The call's server span, ended with the call; `None` with tracing off.
    span: Option<Span>,
}

impl Call {
    fn finish(&mut self, status: &str) {
        // A status is a small number; anything else is no status a client could act on.
        let status = match status.parse::<u8>() {
            Ok(code) if code <= 16 => status,
            _ => "2",
        };
        let method = match &self.method {
            Some(uri) if status != "12" => uri.path().trim_start_matches('/'),
            _ => "_OTHER",
        };
        if let Some(m) = &self.m {
            m.rpc
                .with_label_values(&[method, status])
                .observe(self.start.elapsed().as_secs_f64());
        }
        if let Some(span) = self.span.take() {
            span.record("rpc.grpc.status_code", status.parse::<i64>().unwrap_or(2));
            // The codes OpenTelemetry counts as the server's fault.
            if matches!(status, "2" | "4" | "12" | "13" | "14" | "15") {
                span.record("otel.status_code", "ERROR");
            }
        }
    }
}

/// A gRPC response body that observes its call when the trailers pass, or when it is dropped
/// before them (the client went away: CANCELLED).
struct Observed {
    inner: Body,
    /// `None` once observed.
    call: Option<Call>,
}

impl http_body::Body for Observed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let status = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame
                .trailers_ref()
                .map(|trailers| grpc_status(trailers).unwrap_or("2")),
            // A stream that ends or breaks without a status ended in no known way.
            Poll::Ready(None | Some(Err(_))) => Some("2"),
            Poll::Pending => None,
        };
        if let Some(status) = status
            && let Some(mut call) = self.call.take()
        {
            call.finish(status);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        if let Some(mut call) = self.call.take() {
            call.finish("1");
        }
    }
}
