//! TLS on the one port: gRPC and REST over TLS, ALPN choosing h2 or http/1.1, no plain-text
//! fallback, certificates rotated without a restart (when the files change, and on SIGHUP), a
//! bad file on reload keeping the old certificate, and start-up refusing unusable files.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use futures::StreamExt;
use reqwest::{StatusCode, Version};
use scheduler::{config::Config, grpc::pb};
use tempfile::TempDir;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::support::{
    Failures, Service, TestApp, TestCert, email_job, eventually, id_of, in_millis,
    process::scheduler_command, timestamp,
};

/// Longer than the service's poll of the files (two seconds), so a change it could see has
/// been seen.
const PAST_A_POLL: Duration = Duration::from_millis(3_000);

/// The service in process serving TLS with `cert`, from files in the returned directory; its
/// client trusts the CA of `cert`.
async fn spawn_tls(cert: &TestCert) -> (TestApp, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = cert.write_to(dir.path());
    let mut config = Config::for_tests();
    config.tls_cert_file = Some(cert_file);
    config.tls_key_file = Some(key_file);
    let mut app = TestApp::spawn_with(config).await;
    app.http = https(cert).build().unwrap();
    (app, dir)
}

/// An HTTPS client that trusts only the CA of `cert`.
fn https(cert: &TestCert) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .add_root_certificate(cert.ca())
        .tls_info(true)
}

/// The certificate `url`'s server presents on a new connection, when a client trusting only
/// the CA of `trusting` accepts it; `None` when the handshake fails.
async fn presented(url: &str, trusting: &TestCert) -> Option<Vec<u8>> {
    let response = https(trusting)
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .ok()?;
    assert_eq!(response.status(), StatusCode::OK);
    let info = response.extensions().get::<reqwest::tls::TlsInfo>()?;
    info.peer_certificate().map(<[u8]>::to_vec)
}

/// Waits until new connections to `url` are served `cert`.
async fn until_served(url: &str, cert: &TestCert) {
    eventually(
        "new connections to be served the rotated certificate",
        || {
            let probe = presented(url, cert);
            async move { probe.await.filter(|der| *der == cert.cert_der) }
        },
    )
    .await;
}

#[tokio::test]
async fn a_grpc_client_over_tls_creates_a_job_and_reads_it_back_over_https() {
    let cert = TestCert::new("grpc");
    let (app, _dir) = spawn_tls(&cert).await;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&cert.ca_pem))
        .domain_name("localhost");
    let channel = Channel::from_shared(app.url(""))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("gRPC connects over TLS");
    let mut client = pb::jobs_service_client::JobsServiceClient::new(channel);
    let id = client
        .create_job(pb::CreateJobRequest {
            name: "grpc over tls".into(),
            schedule_time: Some(timestamp("2030-01-01T09:00:00Z")),
            job_type: pb::JobType::Sms as i32,
            job_data: r#"{"To":"+100"}"#.into(),
            ..Default::default()
        })
        .await
        .expect("CreateJob over TLS")
        .into_inner()
        .id;
    let job = client
        .get_job(pb::GetJobRequest { id: id.clone() })
        .await
        .expect("GetJob over TLS")
        .into_inner();
    assert_eq!(job.name, "grpc over tls");

    // The same port serves REST over TLS too.
    let job: serde_json::Value = https(&cert)
        .build()
        .unwrap()
        .get(app.url(&format!("/api/v1/jobs/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job["name"], "grpc over tls");
}

#[tokio::test]
async fn https_clients_get_h2_or_http1_as_they_ask_by_alpn() {
    let cert = TestCert::new("alpn");
    let (app, _dir) = spawn_tls(&cert).await;
    let h2 = https(&cert).build().unwrap();
    let response = h2
        .post(app.url("/api/v1/jobs"))
        .json(&email_job("over h2", &in_millis(3_600_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), Version::HTTP_2, "ALPN offers h2 first");
    assert_eq!(response.status(), StatusCode::CREATED);
    let id = id_of(&response.json().await.unwrap());

    let http1 = https(&cert).http1_only().build().unwrap();
    let response = http1
        .get(app.url(&format!("/api/v1/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), Version::HTTP_11);
    assert_eq!(response.status(), StatusCode::OK);
    let job: serde_json::Value = response.json().await.unwrap();
    assert_eq!(job["name"], "over h2");
}

#[tokio::test]
async fn plain_text_to_the_tls_port_is_refused_and_tls_goes_on_serving() {
    let cert = TestCert::new("plain");
    let (app, _dir) = spawn_tls(&cert).await;
    let plain = reqwest::Client::new()
        .get(format!("http://{}/healthz", app.addr))
        .send()
        .await;
    assert!(plain.is_err(), "HTTP/1.1 in plain text answered: {plain:?}");
    let h2c = async {
        let channel = Channel::from_shared(format!("http://{}", app.addr))?
            .connect()
            .await?;
        let mut client = pb::jobs_service_client::JobsServiceClient::new(channel);
        client
            .list_jobs(pb::ListJobsRequest::default())
            .await
            .map_err(anyhow::Error::from)
    };
    assert!(h2c.await.is_err(), "gRPC over h2c answered");

    let served = presented(&app.url("/healthz"), &cert).await;
    assert_eq!(
        served,
        Some(cert.cert_der.clone()),
        "a failed handshake ended only its connection"
    );
}

#[tokio::test]
async fn graceful_shutdown_over_tls_ends_event_streams_the_reload_task_and_the_port() {
    let cert = TestCert::new("shutdown");
    let (app, _dir) = spawn_tls(&cert).await;
    let addr = app.addr;
    let response = app
        .http
        .get(app.url("/api/v1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    let mut body = response.bytes_stream();
    // `stop` fails unless `run` returns Ok in time: every background task, the reloading of
    // the files included, has ended.
    app.stop().await;
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = body.next().await {}
    })
    .await;
    assert!(end.is_ok(), "the stream ended");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the port is closed"
    );
}

#[tokio::test]
async fn rewritten_files_are_served_to_new_connections_without_a_restart() {
    let (a, b) = (TestCert::new("A"), TestCert::new("B"));
    let (app, dir) = spawn_tls(&a).await;
    let health = app.url("/healthz");
    assert_eq!(presented(&health, &a).await, Some(a.cert_der.clone()));
    let job = app
        .create_job(&email_job("kept", &in_millis(3_600_000)))
        .await;

    b.write_to(dir.path());
    until_served(&health, &b).await;
    assert_eq!(presented(&health, &a).await, None, "A is no longer served");
    let response = https(&b)
        .build()
        .unwrap()
        .get(app.url(&format!("/api/v1/jobs/{}", id_of(&job))))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the same service, not a new one"
    );
}

#[tokio::test]
async fn a_garbage_file_on_reload_keeps_the_old_certificate_in_service() {
    let (a, b) = (TestCert::new("A"), TestCert::new("B"));
    let (app, dir) = spawn_tls(&a).await;
    let health = app.url("/healthz");
    std::fs::write(dir.path().join("cert.pem"), "not a certificate\n").unwrap();
    tokio::time::sleep(PAST_A_POLL).await;
    assert_eq!(
        presented(&health, &a).await,
        Some(a.cert_der.clone()),
        "the previous certificate is still served"
    );

    // The reloading goes on after a failure: good files are picked up.
    b.write_to(dir.path());
    until_served(&health, &b).await;
}

#[tokio::test]
async fn sighup_reloads_files_whose_change_the_poll_cannot_see() {
    let (a, b) = (TestCert::new("A"), TestCert::new("B"));
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, padded(&a.cert_pem)).unwrap();
    std::fs::write(&key_file, padded(&a.key_pem)).unwrap();
    let service = Service::start_tls(
        &[
            "--store".into(),
            "memory".into(),
            "--tls-cert-file".into(),
            cert_file.display().to_string(),
            "--tls-key-file".into(),
            key_file.display().to_string(),
        ],
        a.ca(),
    )
    .await;
    let health = service.url("/healthz");

    // Same length, same modification time: only SIGHUP tells the service.
    replace_unseen(&cert_file, &padded(&b.cert_pem));
    replace_unseen(&key_file, &padded(&b.key_pem));
    tokio::time::sleep(PAST_A_POLL).await;
    assert_eq!(presented(&health, &a).await, Some(a.cert_der.clone()));

    let status = Command::new("kill")
        .args(["-HUP", &service.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    until_served(&health, &b).await;
}

/// `pem` padded with newlines (which PEM readers skip) to one length for every test file.
fn padded(pem: &str) -> String {
    const LENGTH: usize = 4096;
    assert!(
        pem.len() < LENGTH,
        "a test PEM file is longer than {LENGTH}"
    );
    let mut text = pem.to_owned();
    text.extend(std::iter::repeat_n('\n', LENGTH - pem.len()));
    text
}

/// Replaces `path` with `text` atomically (a rename) under the old modification time, so that
/// at no moment does its length or modification time change.
fn replace_unseen(path: &Path, text: &str) {
    let modified = std::fs::metadata(path).unwrap().modified().unwrap();
    let next = PathBuf::from(format!("{}.next", path.display()));
    std::fs::write(&next, text).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&next)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    std::fs::rename(&next, path).unwrap();
}

#[test]
fn unusable_tls_files_stop_start_up_with_a_line_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = TestCert::new("start-up").write_to(dir.path());
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not PEM at all\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let (cert, key, garbage, missing) = (
        cert.display().to_string(),
        key.display().to_string(),
        garbage.display().to_string(),
        missing.display().to_string(),
    );
    let mut failures = Failures::new();
    for (row, cert, key, named) in [
        (
            "an unreadable certificate",
            Some(&missing),
            Some(&key),
            "cert",
        ),
        ("a garbage certificate", Some(&garbage), Some(&key), "cert"),
        ("an unreadable key", Some(&cert), Some(&missing), "key"),
        ("a garbage key", Some(&cert), Some(&garbage), "key"),
        ("a certificate without a key", Some(&cert), None, "key"),
        ("a key without a certificate", None, Some(&key), "cert"),
    ] {
        let flag = format!("--tls-{named}-file");
        let env = format!("SCHEDULER_TLS_{}_FILE", named.to_uppercase());
        for how in ["flags", "environment"] {
            let mut command = scheduler_command(&[]);
            for (setting, path) in [("cert", cert), ("key", key)] {
                let Some(path) = path else { continue };
                if how == "flags" {
                    command.args([&format!("--tls-{setting}-file"), path]);
                } else {
                    command.env(
                        format!("SCHEDULER_TLS_{}_FILE", setting.to_uppercase()),
                        path,
                    );
                }
            }
            let row = format!("{row} ({how})");
            let output = command.output().expect("the binary runs");
            failures.expect(&row, !output.status.success(), "it started");
            let stderr = String::from_utf8_lossy(&output.stderr);
            let first = stderr.lines().next().unwrap_or_default();
            failures.expect(
                &row,
                first.contains(&flag) && first.contains(&env),
                format!("the first line does not name {flag} and {env}: {stderr}"),
            );
        }
    }
    failures.assert_none("unusable TLS settings");
}
