//! Access control end to end, on both protocols: which tokens get in, which role may make which
//! call, how a refusal reads, and that a refused call changes and publishes nothing; the event
//! streams too. The helpers here serve the other `access_*` modules: what stays open and the
//! policy table (`access_policy`), the audit trail (`access_audit`), keys and start-up
//! (`access_keys`).

use std::time::Duration;

use scheduler::{
    config::Config,
    domain::{Audit, JobInput},
    grpc::pb,
};
use serde_json::{Value, json};
use tokio_stream::StreamExt;

use crate::support::{
    Failures, TestApp, email_job, in_millis, sms_job, timestamp,
    tokens::{
        AUDIENCE, ISSUER, Signer, claims, claims_with, hmac_with_public_key, in_seconds, jwks,
        key_path, token, unsigned,
    },
};

/// The service with the RS256 PEM key, a JWKS file of an ES256 and an EdDSA key, the tests'
/// issuer and audience, and a leeway of 5 s.
pub(crate) async fn secured() -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(
        &path,
        jwks(&[(Signer::Ec, "ec-1"), (Signer::Ed, "ed-1")]).to_string(),
    )
    .unwrap();
    let mut config = Config::for_tests();
    config.auth.auth_public_key_file = Some(key_path("rsa.pub"));
    config.auth.auth_jwks_file = Some(path);
    config.auth.auth_issuer = Some(ISSUER.into());
    config.auth.auth_audience = Some(AUDIENCE.into());
    config.auth.auth_leeway_seconds = 5;
    (TestApp::spawn_with(config).await, dir)
}

/// A representative call of each role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    /// viewer
    Read,
    /// operator
    Pause,
    /// admin
    Create,
    /// admin
    Delete,
}

/// What a call should come to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Done,
    NoToken,
    BadToken,
    TooLow,
}

/// An `Authorization` value: the token raw (as the older service's clients send it) or after
/// `Bearer `.
fn authorization(token: &str, bearer: bool) -> String {
    if bearer {
        format!("Bearer {token}")
    } else {
        token.to_owned()
    }
}

/// A job to call on, made through the use cases (no token needed): an hourly SMS job.
pub(crate) async fn target(app: &TestApp) -> String {
    let input: JobInput = serde_json::from_value(sms_job(
        "target",
        json!({"intervalSeconds": 3600}),
        json!({}),
    ))
    .unwrap();
    let created = app
        .jobs()
        .create(input, None, &Audit::default())
        .await
        .unwrap();
    created.job.id.to_string()
}

/// The stored state a refused call must leave as it was: the jobs and the target's version.
async fn state(app: &TestApp, id: &str) -> (u64, Value) {
    let page = app
        .jobs()
        .list(
            Default::default(),
            scheduler::jobs::PageRequest::parse(None, None).unwrap(),
        )
        .await
        .unwrap();
    let job = app
        .jobs()
        .get(scheduler::domain::JobId::parse(id).unwrap())
        .await
        .map(|j| j.version);
    (page.total_count, json!(job.ok()))
}

/// Makes `call` over REST; its status, `WWW-Authenticate` and body.
async fn rest_call(
    app: &TestApp,
    call: Call,
    id: &str,
    auth: Option<&str>,
) -> (u16, Option<String>, String) {
    let request = match call {
        Call::Read => app.http.get(app.url(&format!("/api/v1/jobs/{id}"))),
        Call::Pause => app.http.post(app.url(&format!("/api/v1/jobs/{id}/pause"))),
        Call::Create => app
            .http
            .post(app.url("/api/v1/jobs"))
            .json(&email_job("made by a token", &in_millis(3_600_000))),
        Call::Delete => app.http.delete(app.url(&format!("/api/v1/jobs/{id}"))),
    };
    let request = match auth {
        Some(value) => request.header("authorization", value),
        None => request,
    };
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, challenge, response.text().await.unwrap())
}

pub(crate) fn grpc_request<T>(message: T, auth: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = auth {
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    request
}

/// Makes `call` over gRPC; the status code it ended with.
async fn grpc_call(app: &TestApp, call: Call, id: &str, auth: Option<&str>) -> tonic::Code {
    let mut client = app.grpc().await;
    let id = id.to_owned();
    let result = match call {
        Call::Read => client
            .get_job(grpc_request(pb::GetJobRequest { id }, auth))
            .await
            .map(|_| ()),
        Call::Pause => client
            .pause_job(grpc_request(
                pb::JobOperationRequest {
                    id,
                    reason: String::new(),
                },
                auth,
            ))
            .await
            .map(|_| ()),
        Call::Create => client
            .create_job(grpc_request(
                pb::CreateJobRequest {
                    name: "made by a token".into(),
                    schedule_time: Some(timestamp(&in_millis(3_600_000))),
                    job_type: pb::JobType::Sms as i32,
                    job_data: r#"{"To":"+100"}"#.into(),
                    ..Default::default()
                },
                auth,
            ))
            .await
            .map(|_| ()),
        Call::Delete => client
            .delete_job(grpc_request(pb::DeleteJobRequest { id }, auth))
            .await
            .map(|_| ()),
    };
    match result {
        Ok(()) => tonic::Code::Ok,
        Err(status) => {
            assert!(
                auth.is_none_or(|a| a.len() < 12 || !status.message().contains(a)),
                "the status echoes the token"
            );
            status.code()
        }
    }
}

#[tokio::test]
async fn each_token_and_role_gets_exactly_what_its_row_says_on_both_protocols() {
    let (mut app, _dir) = secured().await;
    let admin = |changes: Value| Signer::Rsa.sign(&claims_with("ana", "admin", changes), None);
    let rows: Vec<(&str, Option<String>, bool, Call, Outcome)> = vec![
        ("no token", None, true, Call::Read, Outcome::NoToken),
        (
            "an empty header",
            Some(String::new()),
            false,
            Call::Read,
            Outcome::NoToken,
        ),
        (
            "malformed",
            Some("not-a-token".into()),
            true,
            Call::Read,
            Outcome::BadToken,
        ),
        (
            "signed by another key",
            Some(Signer::OtherRsa.sign(&claims("ana", "admin"), None)),
            true,
            Call::Create,
            Outcome::BadToken,
        ),
        (
            "alg none",
            Some(unsigned("admin")),
            true,
            Call::Create,
            Outcome::BadToken,
        ),
        (
            "HMAC with the public key as secret",
            Some(hmac_with_public_key("admin")),
            true,
            Call::Delete,
            Outcome::BadToken,
        ),
        (
            "expired",
            Some(admin(json!({"exp": in_seconds(-3600)}))),
            true,
            Call::Create,
            Outcome::BadToken,
        ),
        (
            "expired within the leeway",
            Some(admin(json!({"exp": in_seconds(-2)}))),
            true,
            Call::Read,
            Outcome::Done,
        ),
        (
            "not yet valid",
            Some(admin(json!({"nbf": in_seconds(3600)}))),
            true,
            Call::Read,
            Outcome::BadToken,
        ),
        (
            "wrong issuer",
            Some(admin(json!({"iss": "https://evil.example.com"}))),
            true,
            Call::Read,
            Outcome::BadToken,
        ),
        (
            "wrong audience",
            Some(admin(json!({"aud": "billing"}))),
            true,
            Call::Read,
            Outcome::BadToken,
        ),
        (
            "no exp",
            Some(admin(json!({"exp": null}))),
            true,
            Call::Read,
            Outcome::BadToken,
        ),
        (
            "viewer reading",
            Some(token("vic", "viewer")),
            true,
            Call::Read,
            Outcome::Done,
        ),
        (
            "viewer writing",
            Some(token("vic", "viewer")),
            true,
            Call::Create,
            Outcome::TooLow,
        ),
        (
            "viewer pausing",
            Some(token("vic", "viewer")),
            true,
            Call::Pause,
            Outcome::TooLow,
        ),
        (
            "operator pausing",
            Some(token("olga", "operator")),
            true,
            Call::Pause,
            Outcome::Done,
        ),
        (
            "operator deleting",
            Some(token("olga", "operator")),
            true,
            Call::Delete,
            Outcome::TooLow,
        ),
        (
            "a role the service does not know",
            Some(token("ivan", "intern")),
            true,
            Call::Read,
            Outcome::TooLow,
        ),
        (
            "roles as an array",
            Some(Signer::Rsa.sign(
                &claims_with(
                    "olga",
                    "x",
                    json!({"role": null, "roles": ["viewer", "operator"]}),
                ),
                None,
            )),
            true,
            Call::Pause,
            Outcome::Done,
        ),
        (
            "admin, raw",
            Some(token("ana", "admin")),
            false,
            Call::Create,
            Outcome::Done,
        ),
        (
            "admin, with Bearer",
            Some(token("ana", "admin")),
            true,
            Call::Delete,
            Outcome::Done,
        ),
        (
            "ES256 from the JWKS",
            Some(Signer::Ec.sign(&claims("olga", "operator"), Some("ec-1"))),
            true,
            Call::Pause,
            Outcome::Done,
        ),
        (
            "EdDSA from the JWKS",
            Some(Signer::Ed.sign(&claims("ana", "admin"), Some("ed-1"))),
            false,
            Call::Create,
            Outcome::Done,
        ),
        (
            "ES256 naming the EdDSA key's id",
            Some(Signer::Ec.sign(&claims("olga", "admin"), Some("ed-1"))),
            true,
            Call::Read,
            Outcome::BadToken,
        ),
    ];
    let mut failures = Failures::new();
    for (name, token, bearer, call, outcome) in rows {
        let auth = token.as_deref().map(|t| authorization(t, bearer));
        for protocol in ["REST", "gRPC"] {
            let row = format!("{name} ({protocol} {call:?})");
            let id = target(&app).await;
            app.published().await;
            let before = state(&app, &id).await;
            if protocol == "REST" {
                let (status, challenge, body) = rest_call(&app, call, &id, auth.as_deref()).await;
                let expected_status = match outcome {
                    Outcome::Done => match call {
                        Call::Create => 201,
                        Call::Delete => 204,
                        _ => 200,
                    },
                    Outcome::NoToken | Outcome::BadToken => 401,
                    Outcome::TooLow => 403,
                };
                failures.expect_eq(&row, status, expected_status);
                let challenge = challenge.unwrap_or_default();
                let challenge_ok = match outcome {
                    Outcome::Done => challenge.is_empty(),
                    Outcome::NoToken => challenge == r#"Bearer realm="scheduler""#,
                    Outcome::BadToken => {
                        challenge.starts_with(r#"Bearer realm="scheduler", error="invalid_token""#)
                    }
                    Outcome::TooLow => challenge
                        .starts_with(r#"Bearer realm="scheduler", error="insufficient_scope""#),
                };
                failures.expect(
                    &row,
                    challenge_ok,
                    format!("WWW-Authenticate {challenge:?}"),
                );
                if outcome != Outcome::Done {
                    let problem: Value = serde_json::from_str(&body).unwrap_or_default();
                    failures.expect_eq(
                        &row,
                        problem["status"].as_u64(),
                        Some(expected_status.into()),
                    );
                }
                if let Some(token) = token.as_deref().filter(|t| t.len() > 12) {
                    failures.expect(&row, !body.contains(token), "the body echoes the token");
                }
            } else {
                let code = grpc_call(&app, call, &id, auth.as_deref()).await;
                let expected = match outcome {
                    Outcome::Done => tonic::Code::Ok,
                    Outcome::NoToken | Outcome::BadToken => tonic::Code::Unauthenticated,
                    Outcome::TooLow => tonic::Code::PermissionDenied,
                };
                failures.expect_eq(&row, code, expected);
            }
            if outcome != Outcome::Done {
                failures.expect_eq(
                    format!("{row}: the stored state"),
                    state(&app, &id).await,
                    before,
                );
                let published = app.published().await;
                failures.expect(
                    &row,
                    published.is_empty(),
                    format!("published {published:?}"),
                );
            }
        }
    }
    failures.assert_none("tokens × calls × protocols");
}

#[tokio::test]
async fn event_streams_refuse_without_a_token_and_serve_a_viewer() {
    let (app, _dir) = secured().await;
    let response = app
        .http
        .get(app.url("/api/v1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer realm="scheduler""#
    );
    let response = app
        .http
        .get(app.url("/api/v1/events"))
        .header(
            "authorization",
            format!("Bearer {}", token("vic", "viewer")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );

    let mut client = app.grpc().await;
    let refused = client
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let viewer = token("vic", "viewer");
    let mut watch = client
        .watch_events(grpc_request(
            pb::WatchEventsRequest::default(),
            Some(&viewer),
        ))
        .await
        .expect("a viewer may watch")
        .into_inner();
    let admin = token("ana", "admin");
    let (status, _, _) = rest_call(&app, Call::Create, "", Some(&admin)).await;
    assert_eq!(status, 201);
    let event = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("an event arrives")
        .unwrap()
        .unwrap();
    assert_eq!(event.r#type, "scheduler.job.created");
    assert_eq!(event.actor, "ana");
}
