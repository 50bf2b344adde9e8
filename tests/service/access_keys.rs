//! Keys and start-up: an unusable key or JWKS stops start-up naming its setting; without keys
//! start-up warns once that the API is open; refusals are logged without the token; a JWKS URL
//! rotates its keys and unknown key ids cannot make the service fetch it often.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering},
};

use scheduler::{app::Application, config::Config};
use serde_json::Value;

use crate::{
    access::target,
    support::{
        Failures, TestApp, email_job, eventually, free_port, in_millis,
        tokens::{Signer, claims, jwks, key_path, token},
    },
};

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

/// The binary on a free port with `flags`, its log (standard output) captured.
struct Logged {
    child: std::process::Child,
    base: String,
}

impl Logged {
    async fn start(flags: &[&std::ffi::OsStr]) -> Self {
        let port = free_port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_scheduler"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(flags)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        eventually("the service to answer", || {
            let request = http.get(format!("{base}/healthz")).send();
            async move { request.await.ok().map(|_| ()) }
        })
        .await;
        Self { child, base }
    }

    /// Stops the service; what it logged.
    fn log(mut self) -> String {
        self.child.kill().unwrap();
        let output = self.child.wait_with_output().unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

#[tokio::test]
async fn without_auth_start_up_warns_once_that_the_api_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let service = Logged::start(&[
        "--store".as_ref(),
        "embedded".as_ref(),
        "--data-dir".as_ref(),
        dir.path().as_os_str(),
    ])
    .await;
    let log = service.log();
    let warnings: Vec<_> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("open to anyone"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
}

#[tokio::test]
async fn a_refused_call_is_logged_with_its_reason_and_subject_but_never_its_token() {
    let key = key_path("rsa.pub");
    let service = Logged::start(&[
        "--store".as_ref(),
        "memory".as_ref(),
        "--auth-public-key-file".as_ref(),
        key.as_os_str(),
    ])
    .await;
    let (http, base) = (reqwest::Client::new(), service.base.clone());
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
    let log = service.log();
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
