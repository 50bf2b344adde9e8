//! `GET /api/v1/events`: the lifecycle and run events as Server-Sent Events, resumable.

use std::convert::Infallible;

use axum::{
    extract::State,
    http::{Extensions, HeaderMap},
    response::sse::{self, Sse},
};
use futures::{Stream, StreamExt};

use super::{
    params::{EventParams, LastEventId},
    problem::{ApiQuery, PROBLEM_JSON, Problem, Rejection},
    schemas::EventMessage,
    state::AppState,
    views::EventView,
};
use crate::{events::Watched, jobs::Error, throttle::Client};

/// Lifecycle and run events as Server-Sent Events (`id:` is the event's place in the journal,
/// `event:` its type, `data:` the event JSON). Every replica serves the events of all of them,
/// in one order. A client that reconnects with `Last-Event-ID` (as an `EventSource` does) or
/// `since` gets every event after that one that the journal still keeps
/// (`--event-retention-events`, `--event-retention-seconds`), in order, then the live ones;
/// one whose cursor is older than that gets one `gap` event first, and should read the jobs
/// and their runs again. A client that falls too far behind (more pending than
/// `--stream-buffer-events` or `--stream-buffer-bytes`) gets a `lagged` event saying how many
/// it missed, and the stream ends: it reconnects with its last event's id. Past the limit on
/// open streams (in total or for this client) a new one gets 429 with `Retry-After`.
#[utoipa::path(
    get, path = "/api/v1/events", tag = "events",
    params(EventParams, LastEventId),
    responses(
        (status = 200, description = "An endless `text/event-stream` of events",
            content_type = "text/event-stream", body = EventMessage),
        (status = 400, description = "Malformed job id or cursor", body = Problem, content_type = PROBLEM_JSON),
        (status = 429, description = "Too many event streams open, in total or for this client",
            body = Problem, content_type = PROBLEM_JSON,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
        (status = 503, description = "The job store is unreachable", body = Problem, content_type = PROBLEM_JSON),
    )
)]
pub(crate) async fn events(
    State(state): State<AppState>,
    extensions: Extensions,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<EventParams>,
) -> Result<Sse<impl Stream<Item = Result<sse::Event, Infallible>>>, Rejection> {
    let (only, since) = params.parse(headers.get("last-event-id"))?;
    let permit = state.streams.acquire(Client::of(&extensions))?;
    let watch = state
        .events
        .open(only, since, state.shutdown.clone())
        .await
        .map_err(Error::from)?;
    let stream = permit.hold(watch).map(|watched| Ok(message(watched)));
    Ok(Sse::new(stream).keep_alive(sse::KeepAlive::default()))
}

/// The SSE message of what a watch received. An event that cannot be written (a view of
/// strings and JSON values always can) is logged and reported to the client as missed.
fn message(watched: Watched) -> sse::Event {
    match watched {
        Watched::Event(journaled) => {
            let event = &journaled.event;
            sse::Event::default()
                .id(journaled.seq.to_string())
                .event(event.kind.ce_type())
                .json_data(EventView::from(event))
                .unwrap_or_else(|error| {
                    tracing::error!(%error, id = %event.id, "an event could not be written to its stream");
                    lagged(1)
                })
        }
        Watched::Gap {
            after,
            resumes_after,
        } => sse::Event::default()
            .id(resumes_after.to_string())
            .event("gap")
            .data(format!(
                "{{\"after\":{after},\"resumesAfter\":{resumes_after},\"detail\":\"the events after {after} up to {resumes_after} are no longer kept: read the jobs and their runs again\"}}"
            )),
        Watched::Lagged(missed) => lagged(missed),
    }
}

/// Tells the client it missed `missed` events and was cut off: it should reconnect with its
/// last event's id.
fn lagged(missed: u64) -> sse::Event {
    sse::Event::default()
        .event("lagged")
        .data(format!("{{\"missed\":{missed}}}"))
}
