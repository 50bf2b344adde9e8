//! The event streams: what both the SSE endpoint and the gRPC watch serve.
//!
//! Every event is in the store's journal, at a place (`seq`) that all processes sharing the
//! store see alike. Each process runs one [`Feed`], which reads the journal on from where it
//! got while anyone here watches (woken by this process's writes, and every poll for other
//! processes') and hands what it reads to the in-process [`EventBus`], which fans it out. A
//! watch ([`EventStreams::open`]) reads what it missed from the journal first (from a client's
//! cursor, `Last-Event-ID`), then takes the bus's live events, skipping what it already read
//! and reading any stretch the bus did not carry to it: see `watch`.
//!
//! The bus holds each event once, behind an `Arc`, however many subscribers have it pending.
//! What a subscriber may have pending is bounded by count and by bytes ([`BufferLimits`]); one
//! that falls further behind (a client that stopped reading) is cut off: its pending events are
//! dropped at once, it is told how many it missed ([`Watched::Lagged`]), and its stream ends;
//! it resumes from the journal by reconnecting with its cursor. So a stalled client holds at
//! most its limit, and the memory comes back the moment it is cut off, not when it leaves. The
//! bus keeps nothing for subscribers that are not connected.

mod bus;
mod feed;
mod watch;

pub use self::{
    bus::{BufferLimits, EventBus, Subscription, Watched},
    feed::Feed,
    watch::EventStreams,
};
