//! The web dashboard: a few hand-written modules and a stylesheet, compiled into the binary
//! (`include_bytes!`), served at `/ui/` (`/` redirects there). It calls nothing but the public
//! REST API and the event stream, with the caller's token; the files themselves are open, as
//! the OpenAPI document is. No build step, no Node, no network: what is in `src/ui/` is what is
//! served.

use axum::{
    Router,
    extract::Path,
    http::{StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::get,
};

/// The files, with their content types.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_bytes!("api.js"),
    ),
    (
        "stream.js",
        "text/javascript; charset=utf-8",
        include_bytes!("stream.js"),
    ),
    (
        "cron.js",
        "text/javascript; charset=utf-8",
        include_bytes!("cron.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("style.css"),
    ),
];

/// What the pages may load and call: this origin only, no inline script, no framing.
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'self'";

/// Bytes the files take in the binary, for the record.
pub fn asset_bytes() -> usize {
    FILES.iter().map(|(_, _, bytes)| bytes.len()).sum()
}

/// `/`, `/ui` and `/ui/` to the dashboard, and its files.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(to_dashboard))
        .route("/ui", get(to_dashboard))
        .route("/ui/", get(|| async { file("index.html") }))
        .route(
            "/ui/{file}",
            get(|Path(name): Path<String>| async move { file(&name) }),
        )
}

async fn to_dashboard() -> Redirect {
    Redirect::to("/ui/")
}

/// A file of the dashboard, or a 404 problem.
fn file(name: &str) -> Response {
    match FILES.iter().find(|(file, _, _)| *file == name) {
        Some((_, content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                // Served by the binary that answers the API: always the one of this version.
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::CONTENT_SECURITY_POLICY, POLICY),
                (header::REFERRER_POLICY, "no-referrer"),
            ],
            *bytes,
        )
            .into_response(),
        None => crate::rest::Problem::new(StatusCode::NOT_FOUND, "no such file of the dashboard")
            .into_response(),
    }
}
