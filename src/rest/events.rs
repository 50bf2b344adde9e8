//! `GET /api/v1/events`: the live lifecycle and run events as Server-Sent Events.

use std::convert::Infallible;

use axum::{
    extract::State,
    http::Extensions,
    response::sse::{self, Sse},
};
use futures::{Stream, StreamExt};

use super::{
    params::EventParams,
    problem::{ApiQuery, PROBLEM_JSON, Problem, Rejection},
    schemas::EventMessage,
    state::AppState,
    views::EventView,
};
use crate::{events::Watched, throttle::Client};

/// Live lifecycle and run events as Server-Sent Events (`event:` is the type, `data:` the
/// event JSON). A client that falls too far behind (more pending than
/// `--stream-buffer-events` or `--stream-buffer-bytes`) gets a `lagged` event saying how many it
/// missed, and the stream ends: it should read the state again and reconnect. Past the limit on
/// open streams (in total or for this client) a new one gets 429 with `Retry-After`.
#[utoipa::path(
    get, path = "/api/v1/events", tag = "events",
    params(EventParams),
    responses(
        (status = 200, description = "An endless `text/event-stream` of events",
            content_type = "text/event-stream", body = EventMessage),
        (status = 400, description = "Malformed job id", body = Problem, content_type = PROBLEM_JSON),
        (status = 429, description = "Too many event streams open, in total or for this client",
            body = Problem, content_type = PROBLEM_JSON,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    )
)]
pub(crate) async fn events(
    State(state): State<AppState>,
    extensions: Extensions,
    ApiQuery(params): ApiQuery<EventParams>,
) -> Result<Sse<impl Stream<Item = Result<sse::Event, Infallible>>>, Rejection> {
    let only = params.parse()?;
    let permit = state.streams.acquire(Client::of(&extensions))?;
    let stream = permit
        .hold(state.bus.watch(only, state.shutdown.clone()))
        .map(|watched| Ok(message(watched)));
    Ok(Sse::new(stream).keep_alive(sse::KeepAlive::default()))
}

/// The SSE message of what a watch received. An event that cannot be written (a view of
/// strings and JSON values always can) is logged and reported to the client as missed.
fn message(watched: Watched) -> sse::Event {
    match watched {
        Watched::Event(event) => sse::Event::default()
            .id(event.id.to_string())
            .event(event.kind.ce_type())
            .json_data(EventView::from(event.as_ref()))
            .unwrap_or_else(|error| {
                tracing::error!(%error, id = %event.id, "an event could not be written to its stream");
                lagged(1)
            }),
        Watched::Lagged(missed) => lagged(missed),
    }
}

/// Tells the client it missed `missed` events and was cut off: it should read the state again.
fn lagged(missed: u64) -> sse::Event {
    sse::Event::default()
        .event("lagged")
        .data(format!("{{\"missed\":{missed}}}"))
}
