//! The access check on the one port: every request, REST or gRPC, goes through [`guard`],
//! which asks [`Auth::authorize`] and either lets it through with its [`Caller`] in the
//! request's extensions or refuses it before any handler runs, so a refused call stores,
//! changes and publishes nothing.
//!
//! Refusals follow each protocol's conventions: REST answers 401 with
//! `WWW-Authenticate: Bearer realm="scheduler"` (and `error="invalid_token"` for a bad token)
//! or 403 with `error="insufficient_scope"`, as problem documents; gRPC answers
//! UNAUTHENTICATED or PERMISSION_DENIED. Each refusal is logged once, at WARN while few
//! arrive and at DEBUG beyond [`WARN_PER_WINDOW`] a window, so a client cannot flood the log.
//!
//! [`throttle`], inside the guard, applies the optional request rate per client
//! (`crate::throttle::RateLimit`, by the caller's subject, else its address): past it, REST
//! answers 429 with `Retry-After` and gRPC RESOURCE_EXHAUSTED with `retry-after` metadata.
//! Health checks (`/healthz`, `/readyz`, `grpc.health.v1.Health`) and the metrics are never
//! limited, so a busy client cannot make a balancer take the service out or blind its scraper.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{
    auth::{Auth, Refusal},
    grpc,
    rest::Problem,
    throttle::{Client, RateLimit},
};

/// Refusals logged at WARN per [`WINDOW`]; the rest go to DEBUG and are counted.
pub const WARN_PER_WINDOW: u64 = 10;
const WINDOW: Duration = Duration::from_secs(10);

/// What the guard needs: the decision point and the refusal log's budget.
#[derive(Clone)]
pub struct Guard {
    auth: Auth,
    log: Arc<RefusalLog>,
}

impl Guard {
    /// A guard deciding with `auth`.
    pub fn new(auth: Auth) -> Self {
        Self {
            auth,
            log: Arc::new(RefusalLog::default()),
        }
    }
}

/// The middleware: authorizes the request, or answers its refusal.
pub async fn guard(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
    let decision = guard
        .auth
        .authorize(
            request.method(),
            request.uri().path(),
            request.headers().get(header::AUTHORIZATION),
        )
        .await;
    match decision {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(refusal) => {
            guard.log.refused(&request, &refusal);
            if grpc::is_grpc_call(request.headers()) {
                grpc_refusal(&refusal)
            } else {
                rest_refusal(&refusal)
            }
        }
    }
}

/// The middleware applying the request rate, when one is set; inside [`guard`], so a caller
/// is known by its subject when it has one.
pub async fn throttle(
    State(rate): State<Option<Arc<RateLimit>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(rate) = rate else {
        return next.run(request).await;
    };
    if is_health_check(request.uri().path()) {
        return next.run(request).await;
    }
    match rate.check(&Client::of(request.extensions())) {
        Ok(()) => next.run(request).await,
        Err(exhausted) => {
            tracing::debug!(path = request.uri().path(), detail = %exhausted.detail, "call throttled");
            if grpc::is_grpc_call(request.headers()) {
                tonic::Status::from(exhausted).into_http()
            } else {
                exhausted.into_response()
            }
        }
    }
}

/// Whether a path is a health check, which no rate limits.
fn is_health_check(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
        || path.starts_with("/grpc.health.v1.Health/")
}

/// The `WWW-Authenticate` challenge of a refusal (RFC 6750 section 3).
fn challenge(refusal: &Refusal) -> HeaderValue {
    let detail = refusal.detail().replace(['"', '\\'], "'");
    let value = match refusal {
        Refusal::Missing => r#"Bearer realm="scheduler""#.to_owned(),
        Refusal::Invalid(_) => format!(
            r#"Bearer realm="scheduler", error="invalid_token", error_description="{detail}""#
        ),
        Refusal::Insufficient { needs, .. } => format!(
            r#"Bearer realm="scheduler", error="insufficient_scope", scope="{needs}", error_description="{detail}""#
        ),
    };
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

fn rest_refusal(refusal: &Refusal) -> Response {
    let status = match refusal {
        Refusal::Missing | Refusal::Invalid(_) => StatusCode::UNAUTHORIZED,
        Refusal::Insufficient { .. } => StatusCode::FORBIDDEN,
    };
    let mut response = Problem::new(status, refusal.detail()).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, challenge(refusal));
    response
}

fn grpc_refusal(refusal: &Refusal) -> Response {
    let status = match refusal {
        Refusal::Missing | Refusal::Invalid(_) => tonic::Status::unauthenticated(refusal.detail()),
        Refusal::Insufficient { .. } => tonic::Status::permission_denied(refusal.detail()),
    };
    let mut response = status.into_http::<axum::body::Body>();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, challenge(refusal));
    response
}

/// The log of refusals, with its per-window budget of WARN lines: when the current window
/// started, and how many refusals it has seen.
#[derive(Default)]
struct RefusalLog {
    window: Mutex<(Option<Instant>, u64)>,
}

impl RefusalLog {
    fn refused(&self, request: &Request, refusal: &Refusal) {
        let loud = self.take_budget();
        let subject = match refusal {
            Refusal::Insufficient { subject, .. } => subject.as_deref(),
            _ => None,
        };
        let (method, path) = (request.method(), request.uri().path());
        let reason = refusal.detail();
        if loud {
            tracing::warn!(%method, path, subject, reason, "call refused");
        } else {
            tracing::debug!(%method, path, subject, reason, "call refused");
        }
    }

    /// Whether this refusal may be logged at WARN; starting a new window reports how many
    /// the last one sent to DEBUG.
    fn take_budget(&self) -> bool {
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let (started, seen) = &mut *window;
        let now = Instant::now();
        if started.is_none_or(|start| now.duration_since(start) >= WINDOW) {
            let previous = std::mem::take(seen);
            if previous > WARN_PER_WINDOW {
                tracing::warn!(
                    quieted = previous - WARN_PER_WINDOW,
                    "more calls were refused than are logged at WARN; the rest went to DEBUG"
                );
            }
            *started = Some(now);
        }
        *seen += 1;
        *seen <= WARN_PER_WINDOW
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{BadToken, Role};

    #[test]
    fn each_refusal_has_its_challenge() {
        let cases = [
            (Refusal::Missing, r#"Bearer realm="scheduler""#),
            (
                Refusal::Invalid(BadToken("the token has expired")),
                r#"Bearer realm="scheduler", error="invalid_token", error_description="the token has expired""#,
            ),
            (
                Refusal::Insufficient {
                    needs: Role::Admin,
                    has: Some(Role::Viewer),
                    subject: None,
                },
                r#"Bearer realm="scheduler", error="insufficient_scope", scope="admin", error_description="this call needs the admin role; the token's is viewer""#,
            ),
        ];
        for (refusal, expected) in cases {
            assert_eq!(challenge(&refusal), expected);
        }
    }

    #[test]
    fn only_a_few_refusals_a_window_are_loud() {
        let log = RefusalLog::default();
        let loud = (0..WARN_PER_WINDOW * 3)
            .filter(|_| log.take_budget())
            .count();
        assert_eq!(loud as u64, WARN_PER_WINDOW);
    }
}
