//! Errors as `application/problem+json` (RFC 9457): the REST half of the error table in
//! `crate::jobs::error`, and the extractors whose rejections take the same shape.

use axum::{
    extract::{FromRequest, FromRequestParts, Request, rejection::BytesRejection},
    http::{HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use serde::{Serialize, de::DeserializeOwned};
use utoipa::ToSchema;

use crate::{
    domain::{FieldError, input::json::decode_json},
    jobs::Error,
    throttle::Exhausted,
};

/// The media type of every error response.
pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

/// An error response.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Problem {
    /// `about:blank`: the status and title say what kind of problem it is.
    #[serde(rename = "type")]
    kind: String,
    /// The status's reason phrase.
    title: String,
    /// The HTTP status.
    status: u16,
    /// What went wrong, for a person.
    detail: String,
    /// The fields at fault, by REST path.
    errors: Vec<FieldError>,
}

impl Problem {
    /// A problem of `status`, without field errors.
    pub(crate) fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        let title = status.canonical_reason().unwrap_or("Error").to_owned();
        Self {
            // No page documents the kinds: RFC 9457 says `about:blank` then, with the
            // status phrase as the title.
            kind: "about:blank".to_owned(),
            title,
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(self)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

impl From<&Error> for Problem {
    fn from(error: &Error) -> Self {
        let status = match error {
            Error::Invalid(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::AlreadyExists(_) | Error::Conflict(_) => StatusCode::CONFLICT,
            Error::VersionMismatch => StatusCode::PRECONDITION_FAILED,
            Error::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut problem = Problem::new(status, error.to_string());
        if let Error::Invalid(fields) = error {
            problem.errors = fields.clone();
        }
        problem
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match &self {
            Error::Internal(cause) | Error::Unavailable(cause) => {
                tracing::error!(error = ?cause, "request failed");
            }
            _ => {}
        }
        let mut response = Problem::from(&self).into_response();
        if matches!(self, Error::Unavailable(_)) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// A limit reached: 429 with `Retry-After` (RFC 6585), in whole seconds.
impl From<&Exhausted> for Problem {
    fn from(exhausted: &Exhausted) -> Self {
        Problem::new(StatusCode::TOO_MANY_REQUESTS, &exhausted.detail)
    }
}

impl IntoResponse for Exhausted {
    fn into_response(self) -> Response {
        let mut response = Problem::from(&self).into_response();
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(self.retry_after_seconds()),
        );
        response
    }
}

/// The rejection of this module's extractors: a problem response.
pub(crate) struct Rejection(Response);

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        self.0
    }
}

impl From<Error> for Rejection {
    fn from(e: Error) -> Self {
        Self(e.into_response())
    }
}

impl From<Exhausted> for Rejection {
    fn from(e: Exhausted) -> Self {
        Self(e.into_response())
    }
}

/// A JSON body decoded into `T`: a body that is not JSON, too large, or of the wrong shape is
/// rejected with a problem naming the field, like every other mistake.
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = Rejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = json_body(req, state).await?;
        Ok(Self(decode_json(&bytes).map_err(Error::from)?))
    }
}

/// The bytes of a body declared as JSON: 415 for another content type, 413 when too large.
async fn json_body<S: Send + Sync>(
    req: Request,
    state: &S,
) -> Result<axum::body::Bytes, Rejection> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json" || mime.ends_with("+json")
        })
        .unwrap_or(false);
    if !is_json {
        return Err(not_json());
    }
    axum::body::Bytes::from_request(req, state)
        .await
        .map_err(body_rejection)
}

/// The 415's detail.
pub(crate) const NOT_JSON: &str = "the body must be JSON (Content-Type: application/json)";
/// The 413's detail.
pub(crate) const TOO_LARGE: &str = "the body is larger than the service accepts";
/// The 408's detail.
pub(crate) const TOOK_TOO_LONG: &str = "the request took too long";

fn not_json() -> Rejection {
    Rejection(Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, NOT_JSON).into_response())
}

/// An optional JSON body: none at all (or JSON `null`) is `T::default()`; a body must be a
/// JSON object of `T`'s shape.
pub(crate) struct OptionalJson<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = Rejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let announced = req.headers().contains_key(header::CONTENT_TYPE);
        let bytes = if announced {
            json_body(req, state).await?
        } else {
            // Nothing declared: read what came anyway, so a stray body is not ignored.
            let bytes = axum::body::Bytes::from_request(req, state)
                .await
                .map_err(body_rejection)?;
            if !bytes.is_empty() {
                return Err(not_json());
            }
            bytes
        };
        let text = bytes.trim_ascii();
        if text.is_empty() || text == b"null" {
            return Ok(Self(T::default()));
        }
        Ok(Self(decode_json(&bytes).map_err(Error::from)?))
    }
}

fn body_rejection(rejection: BytesRejection) -> Rejection {
    let status = rejection.status();
    let detail = if status == StatusCode::PAYLOAD_TOO_LARGE {
        TOO_LARGE.to_owned()
    } else {
        rejection.body_text()
    };
    Rejection(Problem::new(status, detail).into_response())
}

/// Path parameters decoded into `T`, with a problem response on malformed input (bad
/// percent-encoding, say).
pub(crate) struct ApiPath<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e| Rejection(Error::invalid("path", e.body_text()).into_response()))
    }
}

/// Query parameters decoded into `T`, with a problem response on malformed input.
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded_query(query)
            .map(Self)
            .map_err(|e| Rejection(Error::invalid("query", e).into_response()))
    }
}

fn serde_urlencoded_query<T: DeserializeOwned>(query: &str) -> Result<T, String> {
    axum::extract::Query::<T>::try_from_uri(
        &format!("/?{query}")
            .parse()
            .map_err(|_| "is malformed".to_owned())?,
    )
    .map(|q| q.0)
    .map_err(|e| e.body_text())
}

/// Refuses a body announced larger than `max` bytes with 413 before reading any of it, so a
/// client sending `Expect: 100-continue` is told at once instead of being asked to send it.
pub(crate) async fn announced_too_large(
    axum::extract::State(max): axum::extract::State<usize>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|length| length > max as u64) {
        return Problem::new(StatusCode::PAYLOAD_TOO_LARGE, TOO_LARGE).into_response();
    }
    next.run(request).await
}

/// Longest request target (path and query) the REST API reads, in bytes: what common proxies
/// allow by default. hyper itself answers a longer one than 64 KiB, before any handler, with a
/// bare 414; this bound answers with a problem document well below that.
pub(crate) const MAX_URI_BYTES: usize = 8 * 1024;

/// Refuses a request target longer than [`MAX_URI_BYTES`] with 414.
pub(crate) async fn uri_too_long(request: Request, next: axum::middleware::Next) -> Response {
    let length = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if length > MAX_URI_BYTES {
        return Problem::new(
            StatusCode::URI_TOO_LONG,
            format!("the request target is longer than {MAX_URI_BYTES} bytes"),
        )
        .into_response();
    }
    next.run(request).await
}

/// The 404 for paths the service does not serve.
pub(crate) async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "no such path")
}

/// The 405 for a known path with a method it does not serve.
pub(crate) async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this path does not serve that method",
    )
}

/// The 408 for a request that took longer than the request timeout (the only error the
/// timeout layer raises; handlers answer their own errors).
pub(crate) async fn timed_out(error: tower::BoxError) -> Problem {
    if error.is::<tower::timeout::error::Elapsed>() {
        Problem::new(StatusCode::REQUEST_TIMEOUT, TOOK_TOO_LONG)
    } else {
        tracing::error!(%error, "request failed in a middleware");
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
}
