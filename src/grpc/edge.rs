//! The edge of the gRPC side, around tonic: what the gRPC protocol leaves to the server that
//! tonic does not do when its services are mounted in an axum router.
//!
//! - A request to a gRPC path that is not a gRPC call is answered as HTTP: 415 for a content
//!   type other than `application/grpc` (as the gRPC HTTP/2 protocol asks), 505 for HTTP/1.1
//!   (gRPC needs HTTP/2), both as problem documents.
//! - `grpc-timeout` is honoured: a call ends with DEADLINE_EXCEEDED at the earlier of the
//!   client's deadline and the server's request timeout (for a stream, until its first answer;
//!   for `ClaimRuns`, which may wait up to a minute for runs, that minute more).
//! - The codes of tonic's codec errors follow the contract, which never answers INTERNAL for a
//!   client's mistake: a request message that does not decode is INVALID_ARGUMENT, and one
//!   larger than the limit RESOURCE_EXHAUSTED (tonic says INTERNAL and OUT_OF_RANGE).

use std::time::Duration;

use axum::{
    extract::{Request, State},
    http::{StatusCode, Version, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tonic::Code;

use crate::rest::Problem;

/// Whether a request is a gRPC call, by its content type as the protocol defines it.
pub(crate) fn is_grpc_call(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// Longest `grpc-timeout` value: 8 digits (the protocol's bound).
const MAX_TIMEOUT_DIGITS: usize = 8;

/// The middleware; `timeout` is the server's request timeout.
pub(crate) async fn edge(
    State(timeout): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    if request.version() != Version::HTTP_2 {
        return Problem::new(
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            "gRPC needs HTTP/2 (h2c or TLS with ALPN h2)",
        )
        .into_response();
    }
    if !is_grpc_call(request.headers()) {
        return Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a gRPC call needs Content-Type: application/grpc",
        )
        .into_response();
    }
    let timeout = if request.uri().path().ends_with("/ClaimRuns") {
        timeout
            + Duration::from_secs(crate::domain::delivery::MAX_CLAIM_WAIT_SECONDS.unsigned_abs())
    } else {
        timeout
    };
    let deadline = match request.headers().get("grpc-timeout") {
        None => timeout,
        Some(value) => match value.to_str().ok().and_then(grpc_timeout) {
            Some(client) => client.min(timeout),
            None => {
                return tonic::Status::invalid_argument("grpc-timeout is malformed").into_http();
            }
        },
    };
    match tokio::time::timeout(deadline, next.run(request)).await {
        Ok(response) => contract_code(response),
        Err(_) => tonic::Status::deadline_exceeded(
            "the call took longer than its deadline (grpc-timeout) or the server's request timeout",
        )
        .into_http(),
    }
}

/// A `grpc-timeout` value: up to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
fn grpc_timeout(value: &str) -> Option<Duration> {
    let unit = value.chars().last()?;
    let digits = &value[..value.len() - unit.len_utf8()];
    if digits.is_empty()
        || digits.len() > MAX_TIMEOUT_DIGITS
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n * 3600),
        'M' => Duration::from_secs(n * 60),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The answer with the contract's code for a codec error on the request, in a trailers-only
/// answer (the status in the headers); other answers as they are.
fn contract_code(response: Response) -> Response {
    let Some(status) = tonic::Status::from_header_map(response.headers()) else {
        return response;
    };
    let message = status.message();
    let code = match status.code() {
        Code::Internal if is_decode_error(message) => Code::InvalidArgument,
        Code::OutOfRange if message.starts_with("Error, decoded message length too large") => {
            Code::ResourceExhausted
        }
        _ => return response,
    };
    tonic::Status::new(code, message).into_http()
}

/// Whether a message is one of tonic's errors for a request message that cannot be read.
fn is_decode_error(message: &str) -> bool {
    [
        "failed to decode Protobuf message",
        "Unexpected EOF decoding stream",
        "protocol error: received message with",
        "Missing request message",
    ]
    .iter()
    .any(|prefix| message.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_by_the_protocols_units_and_bounds() {
        let cases = [
            ("1S", Some(Duration::from_secs(1))),
            ("250m", Some(Duration::from_millis(250))),
            ("2H", Some(Duration::from_secs(7200))),
            ("99999999n", Some(Duration::from_nanos(99_999_999))),
            ("100000000S", None),
            ("S", None),
            ("10x", None),
            ("-1S", None),
            ("", None),
        ];
        for (value, expected) in cases {
            assert_eq!(grpc_timeout(value), expected, "{value:?}");
        }
    }
}
