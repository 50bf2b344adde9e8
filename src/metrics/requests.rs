//! The requests of the one port, REST and gRPC, with OpenTelemetry's names: the layer
//! [`ObserveLayer`] wraps the whole router (outside access control, so refusals count) and times
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
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use axum::{
    body::{Body, Bytes},
    extract::{MatchedPath, Request},
    http::{HeaderMap, Method, Uri, header},
    response::Response,
};
use http_body::{Frame, SizeHint};
use opentelemetry::{KeyValue, context::WithContext};
use tower::{Layer, Service};

use super::{Instruments, Metrics};
use crate::telemetry::{self, ServerSpan};

/// The layer that times and traces every request of the router it wraps (as `Router::layer`,
/// around each route, where the matched route template is known).
///
/// A hand-written layer rather than axum's `from_fn`: it calls the route in place and wraps
/// its future, where `from_fn` clones the route's boxed service and boxes the future for
/// every request.
#[derive(Clone)]
pub struct ObserveLayer {
    m: Option<Arc<Instruments>>,
}

impl ObserveLayer {
    /// Observing into `metrics` (and tracing, while tracing is on).
    pub fn new(metrics: &Metrics) -> Self {
        Self {
            m: metrics.0.clone(),
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            m: self.m.clone(),
        }
    }
}

/// A route, timed and traced.
#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    m: Option<Arc<Instruments>>,
}

impl<S, E> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response, Error = E>,
{
    type Response = Response;
    type Error = E;
    type Future = Observing<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let traced = telemetry::is_on();
        let m = self.m.clone();
        if m.is_none() && !traced {
            return Observing {
                inner: Route::Plain {
                    inner: self.inner.call(request),
                },
                pending: None,
            };
        }
        let start = Instant::now();
        let routed = request.extensions().get::<MatchedPath>().cloned();
        let pending = if is_grpc(request.headers()) {
            // A clone of the URI shares its bytes: no copy of the path.
            let uri = request.uri().clone();
            let span = traced
                .then(|| rpc_span(&request, routed.is_some()))
                .flatten();
            Pending::Grpc(Call {
                m,
                method: routed.map(|_| uri),
                start,
                span,
            })
        } else {
            let method = method_label(request.method());
            let route = routed.as_ref().map_or("", MatchedPath::as_str);
            let span = traced.then(|| http_span(&request, method, route)).flatten();
            Pending::Rest {
                m,
                method,
                route: routed,
                start,
                span,
            }
        };
        let inner = self.inner.call(request);
        let inner = match &pending {
            Pending::Grpc(Call {
                span: Some(span), ..
            })
            | Pending::Rest {
                span: Some(span), ..
            } => Route::Traced {
                inner: span.around(inner),
            },
            _ => Route::Plain { inner },
        };
        Observing {
            inner,
            pending: Some(pending),
        }
    }
}

pin_project_lite::pin_project! {
    /// A route's answer on its way, inside the request's span; observed once it is ready.
    pub struct Observing<F> {
        #[pin]
        inner: Route<F>,
        // `None` with metrics and tracing off, and once observed.
        pending: Option<Pending>,
    }
}

pin_project_lite::pin_project! {
    /// The route's future, with the request's server span as its context while tracing is on.
    #[project = RouteProjection]
    enum Route<F> {
        Plain { #[pin] inner: F },
        Traced { #[pin] inner: WithContext<F> },
    }
}

impl<F: Future> Future for Route<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.project() {
            RouteProjection::Plain { inner } => inner.poll(cx),
            RouteProjection::Traced { inner } => inner.poll(cx),
        }
    }
}

impl<F, E> Future for Observing<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answered = std::task::ready!(this.inner.poll(cx));
        Poll::Ready(match this.pending.take() {
            Some(pending) => answered.map(|response| pending.finish(response)),
            None => answered,
        })
    }
}

/// What a request is observed by once its response headers are ready.
enum Pending {
    /// A REST request: observed with its status now.
    Rest {
        /// `None` with metrics off.
        m: Option<Arc<Instruments>>,
        method: &'static str,
        /// The route template the router matched, if any.
        route: Option<MatchedPath>,
        start: Instant,
        /// `None` with tracing off.
        span: Option<ServerSpan>,
    },
    /// A gRPC call: observed at its final status, in the trailers unless it answered in the
    /// headers.
    Grpc(Call),
}

impl Pending {
    fn finish(self, response: Response) -> Response {
        match self {
            Pending::Rest {
                m,
                method,
                route,
                start,
                span,
            } => {
                let status = response.status();
                if let Some(m) = m {
                    let route = route.as_ref().map_or("", MatchedPath::as_str);
                    m.http
                        .with_label_values(&[method, route, status.as_str()])
                        .observe(start.elapsed().as_secs_f64());
                }
                if let Some(span) = span {
                    span.record(KeyValue::new(
                        "http.response.status_code",
                        i64::from(status.as_u16()),
                    ));
                    if status.is_server_error() {
                        span.fail();
                    }
                    span.end();
                }
                response
            }
            Pending::Grpc(mut call) => {
                if let Some(status) = grpc_status(response.headers()) {
                    call.finish(status);
                    return response;
                }
                response.map(|body| {
                    Body::new(Observed {
                        inner: body,
                        call: Some(call),
                    })
                })
            }
        }
    }
}

/// The server span of a REST request, continuing the caller's trace.
fn http_span(request: &Request, method: &'static str, route: &str) -> Option<ServerSpan> {
    let name = if route.is_empty() {
        method.to_owned()
    } else {
        format!("{method} {route}")
    };
    let attributes = vec![
        KeyValue::new("http.request.method", method),
        KeyValue::new("http.route", route.to_owned()),
    ];
    ServerSpan::start(name, attributes, &caller_context(request.headers()))
}

/// The server span of a gRPC call, continuing the caller's trace; `known` when the router
/// has the method's service.
fn rpc_span(request: &Request, known: bool) -> Option<ServerSpan> {
    let path = request.uri().path().trim_start_matches('/');
    let (service, method) = match path.split_once('/') {
        Some((service, method)) if known => (service, method),
        _ => ("", ""),
    };
    let name = if service.is_empty() { "grpc" } else { path };
    let attributes = vec![
        KeyValue::new("rpc.system", "grpc"),
        KeyValue::new("rpc.service", service.to_owned()),
        KeyValue::new("rpc.method", method.to_owned()),
    ];
    ServerSpan::start(
        name.to_owned(),
        attributes,
        &caller_context(request.headers()),
    )
}

/// The context of the `traceparent` (and `tracestate`) the caller sent; an empty one, so a
/// new trace, when it sent none or a malformed one.
fn caller_context(headers: &HeaderMap) -> opentelemetry::Context {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    telemetry::context_of(text("traceparent"), text("tracestate"))
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
    span: Option<ServerSpan>,
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
            span.record(KeyValue::new(
                "rpc.grpc.status_code",
                status.parse::<i64>().unwrap_or(2),
            ));
            // The codes OpenTelemetry counts as the server's fault.
            if matches!(status, "2" | "4" | "12" | "13" | "14" | "15") {
                span.fail();
            }
            span.end();
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
