//! The accept loop of the service's one port, plain or TLS, and the limits that keep one
//! client's connections from taking the service down.
//!
//! It owns everything about a connection: the most open at once (a semaphore: past it, new
//! connections wait in the kernel's backlog and the open ones keep being served), TCP_NODELAY,
//! the TLS handshake when the port is TLS (`crate::tls::Handshake`), hyper-util's
//! HTTP/1.1-or-HTTP/2 server (h2c and HTTP/1.1 on the plain port, ALPN over TLS) with its limits
//! (the header-read timeout, HTTP/2's concurrent streams and header-list size, keep-alive
//! pings), the idle timeout hyper lacks, the client's address in every request's extensions
//! (`axum::extract::ConnectInfo<SocketAddr>`), and the graceful shutdown: stop accepting, let
//! each connection finish the requests it has, then close it.
//!
//! **Not here:** requests. It hands each one to the router `app` gives it, and knows nothing of
//! REST, gRPC or the use cases, but for one thing: the errors hyper answers itself, before any
//! handler, go out as REST's problem document ([`problem_answers`]).

use std::{
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::ConnectInfo,
    http::Request,
};
use http_body::{Frame, SizeHint};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::{Notify, Semaphore},
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::tls::Handshake;

mod problem_answers;
use problem_answers::ProblemAnswers;

/// How often an HTTP/2 connection is pinged, and how long the answer may take: a peer that
/// vanished without closing (a laptop that slept, a dropped route) would otherwise hold its
/// connection and its event streams until TCP gave up, many minutes later.
const PING_INTERVAL: Duration = Duration::from_secs(20);
const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// How often the accept loop may log that the connection limit is reached.
const FULL_WARNING_EVERY: Duration = Duration::from_secs(10);

/// The limits of the accept loop and of each connection.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// Longest a client may take to send a request's head (HTTP/1.1). Hyper also counts the
    /// wait for the next request on a kept-alive connection as reading a head.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed gracefully (a request
    /// still running, an event stream say, keeps it open however long it takes).
    pub idle_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most concurrent streams (requests) of one HTTP/2 connection, as announced in SETTINGS.
    pub http2_max_concurrent_streams: u32,
    /// Largest header list an HTTP/2 request may carry, in bytes (SETTINGS_MAX_HEADER_LIST_SIZE).
    pub http2_max_header_list_bytes: u32,
}

/// What the port speaks.
#[derive(Clone)]
pub enum Port {
    /// HTTP/1.1 and HTTP/2 with prior knowledge (h2c), on the same socket.
    Plain,
    /// TLS only; HTTP/1.1 or HTTP/2 by ALPN.
    Tls(Handshake),
}

/// Accepts connections on `listener` and serves `router` on each until `shutdown` resolves;
/// then stops accepting, lets every connection finish the requests it has and returns once
/// all are closed. Open event streams end when shutdown starts (their handlers watch for
/// it), so what remains is bounded by the caller's grace period.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    port: Port,
    settings: ServeSettings,
    shutdown: impl Future<Output = ()>,
) {
    let builder = Arc::new(http_builder(&settings));
    let connections = Arc::new(Semaphore::new(settings.max_connections));
    let stop = CancellationToken::new();
    let mut warned: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let permit = match connections.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if warned.is_none_or(|at| at.elapsed() >= FULL_WARNING_EVERY) {
                    warned = Some(Instant::now());
                    tracing::warn!(
                        max_connections = settings.max_connections,
                        "the connection limit is reached; new connections wait until one closes"
                    );
                }
                tokio::select! {
                    permit = connections.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small gRPC and REST responses must not wait for Nagle's algorithm.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::warn!(%error, "could not set TCP_NODELAY");
        }
        let connection = Connection {
            peer,
            router: router.clone(),
            builder: builder.clone(),
            idle_timeout: settings.idle_timeout,
            stop: stop.clone(),
        };
        let port = port.clone();
        tokio::spawn(async move {
            // Held until the connection ends, TLS handshake included.
            let _permit = permit;
            let served = match port {
                Port::Plain => connection.serve(tcp).await,
                Port::Tls(handshake) => match handshake.complete(tcp).await {
                    Ok(tls) => connection.serve(tls).await,
                    Err(error) => Err(error.into()),
                },
            };
            if let Err(error) = served {
                tracing::debug!(%peer, error = format!("{error:#}"), "connection ended");
            }
        });
    }
    drop(listener);
    stop.cancel();
    // Every connection holds a permit until it ends: all of them back means all have ended.
    let all = u32::try_from(settings.max_connections).unwrap_or(u32::MAX);
    let _closed = connections.acquire_many(all).await;
}

/// Hyper's server with the limits of `settings`.
fn http_builder(settings: &ServeSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        // As `axum::serve` does, so both ports accept the same requests.
        .enable_connect_protocol()
        .max_concurrent_streams(settings.http2_max_concurrent_streams)
        .max_header_list_size(settings.http2_max_header_list_bytes)
        .keep_alive_interval(PING_INTERVAL)
        .keep_alive_timeout(PING_TIMEOUT);
    builder
}

/// One accepted connection, and what serving it needs.
struct Connection {
    peer: SocketAddr,
    router: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    idle_timeout: Duration,
    /// Cancelled when shutdown starts: the connection then finishes what it has and closes.
    stop: CancellationToken,
}

impl Connection {
    /// Serves requests on `io` until the client closes, the connection is idle for too long,
    /// or shutdown starts and its requests are done.
    async fn serve<I>(self, io: I) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            peer,
            router,
            builder,
            idle_timeout,
            stop,
        } = self;
        let activity = Arc::new(Activity::default());
        let service = {
            let activity = activity.clone();
            tower::service_fn(move |mut request: Request<hyper::body::Incoming>| {
                let in_flight = activity.begin();
                request.extensions_mut().insert(ConnectInfo(peer));
                let router = router.clone();
                async move {
                    let response = router.oneshot(request).await?;
                    Ok::<_, Infallible>(response.map(|body| InFlightBody {
                        body,
                        _in_flight: in_flight,
                    }))
                }
            })
        };
        let connection = builder.serve_connection_with_upgrades(
            TokioIo::new(ProblemAnswers::new(io)),
            TowerToHyperService::new(service),
        );
        tokio::pin!(connection);
        tokio::select! {
            served = connection.as_mut() => return served,
            () = activity.idle_for(idle_timeout) => {
                tracing::debug!(%peer, "closing an idle connection");
            }
            () = stop.cancelled() => {}
        }
        connection.as_mut().graceful_shutdown();
        connection.await
    }
}

/// The requests in flight on one connection, counted from the call of the router until the
/// response's body is dropped (sent, or abandoned by the client).
#[derive(Default)]
struct Activity {
    in_flight: AtomicUsize,
    /// Notified whenever the count changes.
    changed: Notify,
}

impl Activity {
    /// Counts one more request until the returned guard is dropped.
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
        InFlight(self.clone())
    }

    /// Resolves once no request has been in flight for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the count is read, so no change between the two is missed.
            changed.as_mut().enable();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                tokio::select! {
                    () = tokio::time::sleep(timeout) => return,
                    () = &mut changed => {}
                }
            } else {
                changed.await;
            }
        }
    }
}

/// One request in flight.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

/// A response body that keeps its request counted as in flight until it is dropped.
struct InFlightBody {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for InFlightBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// As `axum::serve` does: a connection reset before it was accepted is nothing; anything else
/// (running out of file descriptors, typically) is logged and waited out for a second.
async fn accept_failed(error: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accept error");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
