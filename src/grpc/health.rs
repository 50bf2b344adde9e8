//! `grpc.health.v1.Health/Watch` streams that end when shutdown starts.
//!
//! tonic-health keeps a watch open for as long as its service lives, so at shutdown a
//! balancer's watch would hold its connection, and the process, until the grace period is
//! over. [`end_watches`] wraps each watch's answer: once the health service has said
//! NOT_SERVING (the watcher gets that update first), the stream ends with the status
//! UNAVAILABLE in its trailers, a proper end of call rather than a reset.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use axum::{
    body::{Body, Bytes},
    extract::{Request, State},
    middleware::Next,
    response::Response,
};
use futures::future::BoxFuture;
use http_body::{Frame, SizeHint};
use tokio_util::sync::CancellationToken;

/// The path of the health service's streaming call.
const WATCH: &str = "/grpc.health.v1.Health/Watch";

/// The middleware: `ended` is cancelled once health says NOT_SERVING.
pub(crate) async fn end_watches(
    State(ended): State<CancellationToken>,
    request: Request,
    next: Next,
) -> Response {
    let watch = request.uri().path() == WATCH;
    let response = next.run(request).await;
    if !watch {
        return response;
    }
    response.map(|body| {
        Body::new(EndsAtShutdown {
            body,
            ended: Some(Box::pin(ended.cancelled_owned())),
        })
    })
}

/// A watch's body, ended with trailers once `ended` resolves.
struct EndsAtShutdown {
    body: Body,
    /// Until the stream has ended, shutdown's signal; `None` afterwards.
    ended: Option<BoxFuture<'static, ()>>,
}

impl http_body::Body for EndsAtShutdown {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let Some(ended) = &mut this.ended else {
            return Poll::Ready(None);
        };
        // The service's own frames first, so the NOT_SERVING update is sent before the end.
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            if frame
                .as_ref()
                .is_none_or(|f| f.as_ref().is_ok_and(Frame::is_trailers))
            {
                this.ended = None;
            }
            return Poll::Ready(frame);
        }
        ready!(ended.as_mut().poll(cx));
        this.ended = None;
        let mut trailers = axum::http::HeaderMap::new();
        // Only a status whose message cannot be written fails, and this one can.
        let _ = tonic::Status::unavailable("the server is shutting down").add_header(&mut trailers);
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended.is_none() || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
