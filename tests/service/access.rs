//! Access control end to end, on both protocols: which tokens get in, which role may make which
//! call, how a refusal reads, that a refused call changes and publishes nothing, what stays
//! open, the audit trail, and a JWKS served over HTTP that rotates its keys.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use scheduler::{
    app::Application,
    config::Config,
    domain::{Audit, EventKind, JobInput},
    grpc::pb,
};
use serde_json::{Value, json};
use tokio_stream::StreamExt;

use crate::support::{
    Failures, TestApp, email_job, eventually, free_port, id_of, in_millis, sms_job, timestamp,
    tokens::{
        AUDIENCE, ISSUER, Signer, claims, claims_with, hmac_with_public_key, in_seconds, jwks,
        key_path, token, unsigned,
    },
};

/// The service with the RS256 PEM key, a JWKS file of an ES256 and an EdDSA key, the tests'
/// issuer and audience, and a leeway of 5 s.
async fn secured() -> (TestApp, tempfile::TempDir) {
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
async fn target(app: &TestApp) -> String {
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

fn grpc_request<T>(message: T, auth: Option<&str>) -> tonic::Request<T> {
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
            app.published();
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
                let published = app.published();
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

#[tokio::test]
async fn health_docs_and_reflection_stay_open_and_unknown_paths_are_not() {
    let (app, _dir) = secured().await;
    for path in [
        "/healthz",
        "/readyz",
        "/api-docs/openapi.json",
        "/swagger-ui/",
    ] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel().await);
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("gRPC health is open");
    assert!(
        list_services(&app, None).await.is_ok(),
        "reflection is open"
    );

    let response = app
        .http
        .get(app.url("/api/v1/secrets"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        401,
        "an unknown path needs a token first"
    );
    let response = app
        .http
        .get(app.url("/api/v1/secrets"))
        .header("authorization", token("ana", "admin"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

async fn list_services(app: &TestApp, auth: Option<&str>) -> Result<(), tonic::Status> {
    use tonic_reflection::pb::v1 as r1;
    let mut client = r1::server_reflection_client::ServerReflectionClient::new(app.channel().await);
    let request = r1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(r1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut responses = client
        .server_reflection_info(grpc_request(tokio_stream::iter([request]), auth))
        .await?
        .into_inner();
    responses.next().await.expect("a response")?;
    Ok(())
}

#[tokio::test]
async fn closed_reflection_needs_a_viewer() {
    let mut config = Config::for_tests();
    config.auth.auth_public_key_file = Some(key_path("rsa.pub"));
    config.auth.auth_close_reflection = true;
    let app = TestApp::spawn_with(config).await;
    let refused = list_services(&app, None).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let viewer = token("vic", "viewer");
    list_services(&app, Some(&viewer))
        .await
        .expect("a viewer may reflect");
}

#[tokio::test]
async fn the_subject_is_recorded_on_the_job_its_events_and_its_ledger() {
    let (mut app, _dir) = secured().await;
    let (admin, operator) = (token("ana", "admin"), token("olga", "operator"));
    let response = app
        .http
        .post(app.url("/api/v1/jobs"))
        .header("authorization", &admin)
        .json(&sms_job(
            "audited",
            json!({"intervalSeconds": 3600}),
            json!({}),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let job: Value = response.json().await.unwrap();
    let id = id_of(&job);
    assert_eq!(
        (&job["createdBy"], &job["updatedBy"]),
        (&json!("ana"), &json!("ana"))
    );
    let created = app.next_event(EventKind::Created, &id).await;
    assert_eq!(created.actor.as_deref(), Some("ana"));

    let (http, base) = (app.http.clone(), app.url(""));
    let post = |path: String, body: Option<Value>| {
        let request = http
            .post(format!("{base}{path}"))
            .header("authorization", format!("Bearer {operator}"));
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let (status, paused) = post(
        format!("/api/v1/jobs/{id}/pause"),
        Some(json!({"reason": "disk full"})),
    )
    .await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["updatedBy"], "olga");
    assert_eq!(paused["createdBy"], "ana");
    let event = app.next_event(EventKind::Paused, &id).await;
    assert_eq!(
        (event.actor.as_deref(), event.reason.as_deref()),
        (Some("olga"), Some("disk full"))
    );

    let (status, _) = post(format!("/api/v1/jobs/{id}/trigger"), None).await;
    assert_eq!(status, 200);
    let (status, _) = post(
        format!("/api/v1/jobs/{id}/cancel"),
        Some(json!({"reason": "retired"})),
    )
    .await;
    assert_eq!(status, 200);
    let runs: Value = app
        .http
        .get(app.url(&format!("/api/v1/jobs/{id}/runs")))
        .header("authorization", &operator)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cancelled = runs["runs"]
        .as_array()
        .expect("a page of runs")
        .iter()
        .find(|r| r["status"] == "CANCELLED")
        .expect("the triggered run was cancelled");
    assert_eq!(
        (&cancelled["actor"], &cancelled["reason"]),
        (&json!("olga"), &json!("retired"))
    );

    let mut client = app.grpc().await;
    let read = client
        .get_job(grpc_request(
            pb::GetJobRequest { id: id.clone() },
            Some(&operator),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (read.created_by.as_str(), read.updated_by.as_str()),
        ("ana", "olga")
    );

    let (status, body) = post(
        format!("/api/v1/jobs/{id}/resume"),
        Some(json!({"reason": "x".repeat(501)})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["field"], "reason");
}

#[tokio::test]
async fn without_auth_every_call_is_open_and_no_actor_is_made_up() {
    let mut app = TestApp::spawn().await;
    let job = app
        .create_job(&sms_job(
            "open",
            json!({"intervalSeconds": 3600}),
            json!({}),
        ))
        .await;
    let id = id_of(&job);
    assert!(
        job.get("createdBy").is_none() && job.get("updatedBy").is_none(),
        "{job}"
    );
    let (status, _) = app
        .post_json(&format!("/api/v1/jobs/{id}/trigger"), &json!({}))
        .await;
    assert_eq!(status, 200);
    let run = app.next_event(EventKind::Run, &id).await;
    assert_eq!(
        (run.actor.clone(), run.run.as_ref().unwrap().actor.clone()),
        (None, None)
    );
    let runs = app.runs(&id).await;
    assert!(runs[0].get("actor").is_none(), "{runs:?}");
}

#[tokio::test]
async fn an_unreadable_or_unparsable_key_stops_start_up_naming_its_setting() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a key").unwrap();
    let missing = dir.path().join("missing.pem");
    type Configure<'a> = Box<dyn Fn(&mut Config) + 'a>;
    let cases: Vec<(&str, Configure)> = vec![
        (
            "AUTH_PUBLIC_KEY_FILE",
            Box::new(|c| c.auth.auth_public_key_file = Some(missing.clone())),
        ),
        (
            "AUTH_PUBLIC_KEY_FILE",
            Box::new(|c| c.auth.auth_public_key_file = Some(garbage.clone())),
        ),
        (
            "AUTH_JWKS_FILE",
            Box::new(|c| c.auth.auth_jwks_file = Some(garbage.clone())),
        ),
        (
            "AUTH_JWKS_FILE",
            Box::new(|c| c.auth.auth_jwks_file = Some(missing.clone())),
        ),
        (
            "AUTH_JWKS_URL",
            Box::new(|c| {
                c.auth.auth_jwks_url = Some(format!("http://127.0.0.1:{}/jwks", free_port()))
            }),
        ),
        (
            "AUTH_ALGORITHMS",
            Box::new(|c| {
                c.auth.auth_public_key_file = Some(key_path("rsa.pub"));
                c.auth.auth_algorithms = "HS256".into();
            }),
        ),
    ];
    let mut failures = Failures::new();
    for (setting, configure) in cases {
        let mut config = Config::for_tests();
        configure(&mut config);
        match Application::build(config).await {
            Ok(_) => failures.expect(setting, false, "started"),
            Err(error) => {
                let text = format!("{error:#}");
                failures.expect(setting, text.starts_with(setting), text);
            }
        }
    }
    failures.assert_none("start-up with bad keys");
}

#[tokio::test]
async fn without_auth_start_up_warns_once_that_the_api_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_scheduler"))
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--store",
            "embedded",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        // The log goes to standard output.
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    eventually("the service to answer", || {
        let request = http.get(format!("http://127.0.0.1:{port}/healthz")).send();
        async move { request.await.ok().map(|_| ()) }
    })
    .await;
    child.kill().unwrap();
    let output = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stdout);
    let warnings: Vec<_> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("open to anyone"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
}

#[tokio::test]
async fn a_refused_call_is_logged_with_its_reason_and_subject_but_never_its_token() {
    let port = free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_scheduler"))
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--store",
            "memory",
        ])
        .arg("--auth-public-key-file")
        .arg(key_path("rsa.pub"))
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    eventually("the service to answer", || {
        let request = http.get(format!("{base}/healthz")).send();
        async move { request.await.ok().map(|_| ()) }
    })
    .await;
    let forged = Signer::OtherRsa.sign(&claims("mallory", "admin"), None);
    let viewer = token("vic", "viewer");
    for token in [&forged, &viewer] {
        let response = http
            .post(format!("{base}/api/v1/jobs"))
            .header("authorization", format!("Bearer {token}"))
            .json(&email_job("refused", &in_millis(60_000)))
            .send()
            .await
            .unwrap();
        assert!([401, 403].contains(&response.status().as_u16()));
    }
    child.kill().unwrap();
    let output = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stdout);
    let refusals: Vec<_> = log.lines().filter(|l| l.contains("call refused")).collect();
    assert_eq!(refusals.len(), 2, "{log}");
    assert!(
        refusals[0].contains("signature does not verify"),
        "{}",
        refusals[0]
    );
    assert!(
        refusals[1].contains("vic") && refusals[1].contains("admin role"),
        "{}",
        refusals[1]
    );
    for token in [&forged, &viewer] {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!log.contains(signature), "the log holds a token: {log}");
    }
}

/// A JWKS served over HTTP, whose keys the test changes; it counts the fetches.
struct JwksServer {
    url: String,
    document: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(document: Value) -> Self {
        let document = Arc::new(Mutex::new(document));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (document.clone(), fetches.clone());
        let router = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let (served, counted) = (served.clone(), counted.clone());
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    axum::Json(served.lock().unwrap().clone())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            url,
            document,
            fetches,
        }
    }
}

#[tokio::test]
async fn a_jwks_url_rotates_keys_and_unknown_ids_cannot_make_it_fetch_often() {
    let jwks_server = JwksServer::start(jwks(&[(Signer::Rsa, "k1")])).await;
    let mut config = Config::for_tests();
    config.auth.auth_jwks_url = Some(jwks_server.url.clone());
    let app = TestApp::spawn_with(config).await;
    let old = Signer::Rsa.sign(&claims("ana", "viewer"), Some("k1"));
    let new = Signer::OtherRsa.sign(&claims("ana", "viewer"), Some("k2"));
    let id = target(&app).await;
    let read = |token: String| {
        let request = app
            .http
            .get(app.url(&format!("/api/v1/jobs/{id}")))
            .header("authorization", format!("Bearer {token}"))
            .send();
        async move { request.await.unwrap().status().as_u16() }
    };
    assert_eq!(read(old.clone()).await, 200);
    assert_eq!(read(new.clone()).await, 401, "k2 is not published yet");

    // A burst of unknown key ids fetches at most once per 10 s.
    let before = jwks_server.fetches.load(Ordering::SeqCst);
    for n in 0..30 {
        let stranger = Signer::OtherRsa.sign(&claims("eve", "admin"), Some(&format!("x{n}")));
        assert_eq!(read(stranger).await, 401);
    }
    let during = jwks_server.fetches.load(Ordering::SeqCst) - before;
    assert!(during <= 1, "{during} fetches for 30 unknown key ids");

    *jwks_server.document.lock().unwrap() = jwks(&[(Signer::OtherRsa, "k2")]);
    eventually("the rotated key to be fetched", || {
        let status = read(new.clone());
        async move { (status.await == 200).then_some(()) }
    })
    .await;
    assert_eq!(read(old).await, 401, "the retired key no longer verifies");
}

#[test]
fn the_readme_role_table_is_the_policy() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("<!-- roles:start")
        .expect("the table's start marker");
    let end = readme
        .find("<!-- roles:end -->")
        .expect("the table's end marker");
    let rows: Vec<&str> = readme[start..end]
        .lines()
        .filter(|line| line.starts_with("| `"))
        .collect();
    let expected: Vec<String> = scheduler::auth::policy::table()
        .into_iter()
        .map(|(rest, grpc, role)| format!("| `{rest}` | `{grpc}` | {role} |"))
        .collect();
    assert_eq!(
        rows, expected,
        "README.md's role table differs from src/auth/policy.rs"
    );
}

#[test]
fn every_documented_route_and_every_grpc_method_has_its_own_row_in_the_policy() {
    use prost::Message;
    use scheduler::auth::policy::{Operation, operation};
    use utoipa::OpenApi;

    let mut failures = Failures::new();
    let document = scheduler::rest::ApiDoc::openapi();
    for (path, item) in &document.paths.paths {
        if !path.starts_with("/api/v1/") {
            continue;
        }
        let concrete = path
            .replace("{id}", "65f1c0ffee0123456789abcd")
            .replace("{runId}", "0b5f6c1e-3f4a-5d2b-9c8e-7a6b5c4d3e2f");
        let methods = [
            (axum::http::Method::GET, item.get.is_some()),
            (axum::http::Method::POST, item.post.is_some()),
            (axum::http::Method::PATCH, item.patch.is_some()),
            (axum::http::Method::DELETE, item.delete.is_some()),
            (axum::http::Method::PUT, item.put.is_some()),
        ];
        for (method, _) in methods.into_iter().filter(|(_, present)| *present) {
            let found = operation(&method, &concrete);
            failures.expect(
                format!("{method} {path}"),
                found.is_some_and(|op| op != Operation::Unclassified),
                format!("classified as {found:?}"),
            );
        }
    }
    let set = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).unwrap();
    let service = set
        .file
        .iter()
        .flat_map(|file| &file.service)
        .find(|service| service.name() == "JobsService")
        .expect("the job service");
    for method in &service.method {
        let path = format!("/proto.JobsService/{}", method.name());
        failures.expect(
            &path,
            operation(&axum::http::Method::POST, &path).is_some(),
            "not in the policy",
        );
    }
    failures.assert_none("routes and methods without a policy row");
}
