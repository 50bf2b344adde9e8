//! What access control costs a request: the same calls against two services in this process on
//! the in-memory store, one open and one configured with the RS256 test key, alternated within
//! one run so the ratio compares like with like. Also the decision alone (`Auth::authorize`,
//! signature verification included) on one thread, per algorithm, in microseconds.
//!
//! Run with `cargo bench --bench auth` (`-- --quick` for 1,000 calls per figure instead of
//! 5,000). It prints figures and asserts nothing about speed.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use axum::http::{HeaderValue, Method};
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use scheduler::{
    app::Application,
    auth::Auth,
    config::Config,
    grpc::pb::{self, jobs_service_client::JobsServiceClient},
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

mod support;
use support::throughput;

const CONCURRENCY: usize = 16;

fn key(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keys")
        .join(name)
}

fn sign(algorithm: Algorithm, file: &str, kid: Option<&str>) -> String {
    sign_nth(algorithm, file, kid, 0)
}

/// A token told apart from the others by its `jti`, so the cache cannot answer for it.
fn sign_nth(algorithm: Algorithm, file: &str, kid: Option<&str>, n: usize) -> String {
    let pem = std::fs::read(key(file)).unwrap();
    let key = match algorithm {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        _ => EncodingKey::from_ed_pem(&pem),
    }
    .unwrap();
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"sub": "bench", "role": "admin", "iat": now, "exp": now + 3600, "jti": n});
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

struct Service {
    base: String,
    id: String,
    shutdown: CancellationToken,
}

async fn service(secured: bool) -> Service {
    let mut config = Config::for_tests();
    if secured {
        config.auth.auth_public_key_file = Some(key("rsa.pub"));
    }
    let app = Application::build(config).await.unwrap();
    let input = serde_json::from_value(json!({
        "name": "bench", "jobType": "SMS", "jobData": {"To": "+100"},
        "schedule": {"runAt": "2099-01-01T00:00:00Z"}
    }))
    .unwrap();
    let id = app
        .jobs()
        .create(input, None, &Default::default())
        .await
        .unwrap()
        .job
        .id
        .to_string();
    let base = format!("http://{}", app.local_addr());
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run(shutdown.clone()));
    Service { base, id, shutdown }
}

async fn rest_get(service: &Service, token: Option<&str>, count: usize) -> (f64, f64, f64) {
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/jobs/{}", service.base, service.id);
    let authorization = token.map(|t| format!("Bearer {t}"));
    throughput(CONCURRENCY, count, move |_| {
        let mut request = http.get(&url);
        if let Some(value) = &authorization {
            request = request.header("authorization", value);
        }
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.bytes().await.unwrap();
        }
    })
    .await
}

async fn grpc_get(service: &Service, token: Option<&str>, count: usize) -> (f64, f64, f64) {
    let client = JobsServiceClient::connect(service.base.clone())
        .await
        .unwrap();
    let (id, token) = (service.id.clone(), token.map(str::to_owned));
    throughput(CONCURRENCY, count, move |_| {
        let mut client = client.clone();
        let mut request = tonic::Request::new(pb::GetJobRequest { id: id.clone() });
        if let Some(token) = &token {
            request
                .metadata_mut()
                .insert("authorization", token.parse().unwrap());
        }
        async move {
            client.get_job(request).await.unwrap();
        }
    })
    .await
}

/// The decision alone, on one thread, for each of `tokens` in turn `rounds` times:
/// microseconds per call, mean.
async fn decision(auth: &Auth, tokens: &[String], rounds: usize) -> f64 {
    let headers: Vec<_> = tokens
        .iter()
        .map(|t| HeaderValue::from_str(t).unwrap())
        .collect();
    let start = Instant::now();
    for _ in 0..rounds {
        for header in &headers {
            auth.authorize(&Method::GET, "/api/v1/jobs", Some(header))
                .await
                .unwrap();
        }
    }
    start.elapsed().as_secs_f64() * 1e6 / (rounds * headers.len()) as f64
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let count = if quick { 1_000 } else { 5_000 };
    println!(
        "access-control benchmark: {} cores, concurrency {CONCURRENCY}, {count} calls per figure",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let token = sign(Algorithm::RS256, "rsa.key", None);
    let (open, secured) = (service(false).await, service(true).await);
    // Warm both up, then alternate: open, secured, open, secured; keep each side's best.
    rest_get(&open, None, count / 5).await;
    rest_get(&secured, Some(&token), count / 5).await;
    type Figure = (f64, f64, f64);
    let best = |a: Figure, b: Figure| if b.0 > a.0 { b } else { a };
    let mut figures = [(0.0, 0.0, 0.0); 4];
    for _ in 0..3 {
        figures[0] = best(figures[0], rest_get(&open, None, count).await);
        figures[1] = best(figures[1], rest_get(&secured, Some(&token), count).await);
        figures[2] = best(figures[2], grpc_get(&open, None, count).await);
        figures[3] = best(figures[3], grpc_get(&secured, Some(&token), count).await);
    }
    let labels = [
        "REST get, open",
        "REST get, RS256 token",
        "gRPC get, open",
        "gRPC get, RS256 token",
    ];
    for (label, (rate, p50, p99)) in labels.iter().zip(figures) {
        println!("{label:<24} {rate:>8.0} req/s   p50 {p50:>6.2} ms   p99 {p99:>6.2} ms");
    }
    for (protocol, open, secured) in [
        ("REST", figures[0], figures[1]),
        ("gRPC", figures[2], figures[3]),
    ] {
        println!(
            "{protocol}: secured/open throughput {:.2}, p50 +{:.3} ms",
            secured.0 / open.0,
            secured.1 - open.1
        );
    }

    // The decision alone, per algorithm (keys from a JWKS file for ES256 and EdDSA).
    let dir = tempfile::tempdir().unwrap();
    let jwks_path = dir.path().join("jwks.json");
    let jwk = |algorithm, file: &str, kid: &str| {
        let pem = std::fs::read(key(file)).unwrap();
        let key = match algorithm {
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
            _ => EncodingKey::from_ed_pem(&pem),
        }
        .unwrap();
        let mut value =
            serde_json::to_value(Jwk::from_encoding_key(&key, algorithm).unwrap()).unwrap();
        value["kid"] = json!(kid);
        value
    };
    let document = json!({"keys": [jwk(Algorithm::ES256, "ec.key", "ec"), jwk(Algorithm::EdDSA, "ed25519.key", "ed")]});
    std::fs::write(&jwks_path, document.to_string()).unwrap();
    let mut settings = Config::for_tests().auth;
    settings.auth_public_key_file = Some(key("rsa.pub"));
    settings.auth_jwks_file = Some(jwks_path);
    let auth = Auth::from_settings(&settings).await.unwrap();
    let distinct = count / 5;
    for (name, algorithm, file, kid) in [
        ("RS256 (2048-bit)", Algorithm::RS256, "rsa.key", None),
        ("ES256", Algorithm::ES256, "ec.key", Some("ec")),
        ("EdDSA", Algorithm::EdDSA, "ed25519.key", Some("ed")),
    ] {
        let tokens: Vec<String> = (1..=distinct)
            .map(|n| sign_nth(algorithm, file, kid, n))
            .collect();
        // First sight of each token: its signature is checked. Then the same tokens again:
        // the cache answers.
        let cold = decision(&auth, &tokens, 1).await;
        let warm = decision(&auth, &tokens, 10).await;
        println!(
            "decision, {name:<17} token: {cold:>6.1} µs first seen, {warm:>5.2} µs repeated (one thread, {distinct} tokens)"
        );
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    open.shutdown.cancel();
    secured.shutdown.cancel();
}
