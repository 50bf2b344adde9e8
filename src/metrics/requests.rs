//! The request durations of the one port, REST and gRPC, with OpenTelemetry's names: the
//! middleware [`observe`] wraps the whole router (outside access control, so refusals count).
//!
//! A REST request is observed when its response headers are ready, labelled with the route
//! template the router matched (`/api/v1/jobs/{id}`), never the raw path; a request no route
//! matched has an empty route. A gRPC call is observed at its final status, which comes in the
//! trailers at the end of its response stream (or in the headers of a trailers-only answer);
//! its method is the path only for a service the router knows and a status other than
//! UNIMPLEMENTED, so made-up method names all count as `_OTHER`.

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

use super::{Instruments, Metrics};

/// The middleware: times the request and labels it by protocol.
pub async fn observe(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let Some(m) = metrics.0.clone() else {
        return next.run(request).await;
    };
    let start = Instant::now();
    let routed = request.extensions().get::<MatchedPath>().cloned();
    if is_grpc(request.headers()) {
        // A clone of the URI shares its bytes: no copy of the path.
        let uri = request.uri().clone();
        let response = next.run(request).await;
        let mut call = Call {
            m,
            method: routed.map(|_| uri),
            start,
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
    let response = next.run(request).await;
    let route = routed.as_ref().map_or("", MatchedPath::as_str);
    m.http
        .with_label_values(&[method, route, response.status().as_str()])
        .observe(start.elapsed().as_secs_f64());
    response
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
    m: Arc<Instruments>,
    /// The call's URI when a route matched it.
    method: Option<Uri>,
    start: Instant,
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
        self.m
            .rpc
            .with_label_values(&[method, status])
            .observe(self.start.elapsed().as_secs_f64());
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
