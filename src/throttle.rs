//! What one client may hold open and how fast it may call: the limit on concurrent event
//! streams ([`StreamLimit`], in total and per client) and the optional request rate per client
//! ([`RateLimit`], a token bucket). Both key a client the same way ([`Client`]): by its
//! authenticated subject when it has one, else by its address.
//!
//! A refusal is an [`Exhausted`], with the time after which trying again makes sense; each
//! transport renders it in its own conventions (REST: 429 with `Retry-After`; gRPC:
//! RESOURCE_EXHAUSTED with `retry-after` metadata and a `RetryInfo` detail).
//!
//! **Not here:** HTTP or gRPC. The SSE handler and the gRPC watch take a [`StreamPermit`]
//! before their stream starts; `crate::access::throttle` applies the rate to every call.

use std::{
    collections::HashMap,
    fmt,
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::extract::ConnectInfo;
use futures::{Stream, StreamExt};
use governor::{Quota, RateLimiter, clock::Clock, state::keyed::DefaultKeyedStateStore};
use tokio_util::sync::CancellationToken;

use crate::auth::Caller;

/// How long a client refused a stream is told to wait: streams end when their clients leave,
/// which the service cannot foresee, so this is a polite pace for retries, not a promise.
pub const STREAM_RETRY_AFTER: Duration = Duration::from_secs(5);

/// How often the rate limiter forgets clients whose bucket is full again, so that its memory
/// follows the clients seen in the last moments, not every client ever seen.
const SWEEP: Duration = Duration::from_secs(30);

/// Who a limit counts a call against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Client {
    /// The authenticated subject (`sub` of the token), wherever it calls from.
    Subject(String),
    /// The address of an anonymous caller.
    Address(IpAddr),
    /// A request that came with neither (the router used without the accept loop).
    Unknown,
}

impl Client {
    /// The client of a request, from what the accept loop (`ConnectInfo`) and the access guard
    /// (`Caller`) put in its extensions.
    pub fn of(extensions: &axum::http::Extensions) -> Self {
        if let Some(subject) = Caller::of(extensions).subject {
            return Self::Subject(subject);
        }
        match extensions.get::<ConnectInfo<SocketAddr>>() {
            // An IPv4 client of a dual-stack socket is one client, however it is written.
            Some(ConnectInfo(address)) => Self::Address(address.ip().to_canonical()),
            None => Self::Unknown,
        }
    }
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Subject(subject) => write!(f, "subject {subject}"),
            Self::Address(address) => write!(f, "address {address}"),
            Self::Unknown => f.write_str("an unknown client"),
        }
    }
}

/// A call refused because a limit is reached: 429 on REST, RESOURCE_EXHAUSTED on gRPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exhausted {
    /// What was refused and why, for the caller.
    pub detail: String,
    /// When trying again makes sense.
    pub retry_after: Duration,
}

impl Exhausted {
    /// `retry_after` in whole seconds, at least 1: the value of a `Retry-After` header.
    pub fn retry_after_seconds(&self) -> u64 {
        let seconds = self.retry_after.as_secs();
        if self.retry_after.subsec_nanos() > 0 {
            seconds + 1
        } else {
            seconds.max(1)
        }
    }
}

/// The limit on open event streams (SSE and the gRPC watch together), in total and per client.
#[derive(Clone)]
pub struct StreamLimit {
    open: Arc<OpenStreams>,
}

/// The streams open now, and the bounds.
struct OpenStreams {
    total: usize,
    per_client: usize,
    /// The number open in total, and per client with at least one open (a client's entry goes
    /// with its last stream, so the map is as large as the clients streaming, no larger).
    counts: Mutex<(usize, HashMap<Client, usize>)>,
}

impl StreamLimit {
    /// At most `total` streams at once, `per_client` of them for one client.
    pub fn new(total: usize, per_client: usize) -> Self {
        Self {
            open: Arc::new(OpenStreams {
                total,
                per_client,
                counts: Mutex::new((0, HashMap::new())),
            }),
        }
    }

    /// A permit for one more stream of `client`, or the refusal when a bound is reached.
    pub fn acquire(&self, client: Client) -> Result<StreamPermit, Exhausted> {
        let mut counts = self.open.counts.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_client) = &mut *counts;
        let mine = per_client.get(&client).copied().unwrap_or(0);
        let refused = if *total >= self.open.total {
            Some(format!(
                "the service serves at most {} event streams at once; try again later",
                self.open.total
            ))
        } else if mine >= self.open.per_client {
            Some(format!(
                "a client may hold at most {} event streams at once; {client} holds {mine}",
                self.open.per_client
            ))
        } else {
            None
        };
        if let Some(detail) = refused {
            tracing::debug!(%client, open = *total, "event stream refused");
            return Err(Exhausted {
                detail,
                retry_after: STREAM_RETRY_AFTER,
            });
        }
        *total += 1;
        *per_client.entry(client.clone()).or_default() += 1;
        Ok(StreamPermit {
            open: self.open.clone(),
            client,
        })
    }
}

/// One open event stream; the count goes down when it is dropped.
pub struct StreamPermit {
    open: Arc<OpenStreams>,
    client: Client,
}

impl StreamPermit {
    /// `stream`, holding this permit for as long as the stream lives.
    pub fn hold<S: Stream>(self, stream: S) -> impl Stream<Item = S::Item> {
        stream.map(move |item| {
            let _held = &self;
            item
        })
    }
}

impl fmt::Debug for StreamPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamPermit")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut counts = self.open.counts.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_client) = &mut *counts;
        *total = total.saturating_sub(1);
        if let Some(mine) = per_client.get_mut(&self.client) {
            *mine -= 1;
            if *mine == 0 {
                per_client.remove(&self.client);
            }
        }
    }
}

/// The request rate each client may sustain, with a burst: governor's keyed GCRA (a token
/// bucket without a timer), one bucket per [`Client`].
pub struct RateLimit {
    limiter: RateLimiter<Client, DefaultKeyedStateStore<Client>, governor::clock::DefaultClock>,
}

impl RateLimit {
    /// `per_second` calls a second on average, up to `burst` at once.
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        Self {
            limiter: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
        }
    }

    /// Takes one call from `client`'s bucket, or says how long until one is there.
    pub fn check(&self, client: &Client) -> Result<(), Exhausted> {
        self.limiter.check_key(client).map_err(|not_until| {
            let retry_after = not_until.wait_time_from(self.limiter.clock().now());
            Exhausted {
                detail: format!(
                    "too many calls from {client}; try again in {} s",
                    retry_after.as_secs_f64().ceil().max(1.0)
                ),
                retry_after,
            }
        })
    }

    /// How many clients the limiter remembers now.
    pub fn clients(&self) -> usize {
        self.limiter.len()
    }

    /// Forgets the clients whose bucket has filled up again (they are indistinguishable from
    /// new ones), every few seconds until `shutdown`.
    pub async fn sweep(self: Arc<Self>, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(SWEEP);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {
                    self.limiter.retain_recent();
                    self.limiter.shrink_to_fit();
                }
                () = shutdown.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn address(last: u8) -> Client {
        Client::Address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
    }

    #[test]
    fn streams_are_bounded_per_client_and_in_total_and_come_back_when_dropped() {
        let limit = StreamLimit::new(3, 2);
        let first = limit.acquire(address(1)).unwrap();
        let _second = limit.acquire(address(1)).unwrap();
        let refused = limit
            .acquire(address(1))
            .expect_err("a third for one client");
        assert!(refused.detail.contains("at most 2"), "{}", refused.detail);
        assert_eq!(refused.retry_after_seconds(), 5);
        let _other = limit.acquire(address(2)).unwrap();
        let refused = limit.acquire(address(3)).expect_err("a fourth in total");
        assert!(refused.detail.contains("at most 3"), "{}", refused.detail);
        drop(first);
        let _again = limit
            .acquire(address(3))
            .expect("a dropped permit is returned");
        assert_eq!(limit.open.counts.lock().unwrap().1.len(), 3);
    }

    #[test]
    fn a_caller_with_a_subject_is_counted_by_it_else_by_its_address() {
        let mut extensions = axum::http::Extensions::new();
        assert_eq!(Client::of(&extensions), Client::Unknown);
        let mapped: SocketAddr = "[::ffff:127.0.0.9]:4000".parse().unwrap();
        extensions.insert(ConnectInfo(mapped));
        assert_eq!(Client::of(&extensions), address(9));
        extensions.insert(Caller {
            subject: Some("alice".into()),
        });
        assert_eq!(Client::of(&extensions), Client::Subject("alice".into()));
    }

    #[test]
    fn a_client_gets_its_burst_then_waits_while_another_is_unaffected() {
        let rate = RateLimit::new(NonZeroU32::new(1).unwrap(), NonZeroU32::new(3).unwrap());
        for _ in 0..3 {
            rate.check(&address(1)).unwrap();
        }
        let refused = rate.check(&address(1)).unwrap_err();
        assert!(refused.retry_after <= Duration::from_secs(1));
        assert_eq!(refused.retry_after_seconds(), 1);
        rate.check(&address(2))
            .expect("another client has its own bucket");
        assert_eq!(rate.clients(), 2);
    }
}
