//! The real `scheduler` binary as a child process: durability across SIGKILL, and a graceful
//! exit on SIGTERM.

use std::{
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::helpers::{email_job, eventually, in_millis};

pub struct Service {
    pub child: Child,
    base: String,
}

impl Service {
    /// Starts the binary on a free port with its embedded store in `data_dir`.
    pub async fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, &[]).await
    }

    /// As `start`, with more flags.
    pub async fn start_with(data_dir: &Path, flags: &[String]) -> Self {
        let mut args = vec![
            "--store".to_owned(),
            "embedded".to_owned(),
            "--data-dir".to_owned(),
            data_dir.display().to_string(),
        ];
        args.extend_from_slice(flags);
        Self::start_args(&args).await
    }

    /// Starts the binary on a free port with exactly these flags (besides host and port).
    pub async fn start_args(flags: &[String]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_scheduler"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(flags)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the binary starts");
        let service = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        eventually("the service to answer /healthz", || {
            let request = http.get(format!("{}/healthz", service.base)).send();
            async move { request.await.ok().filter(|r| r.status() == 200).map(|_| ()) }
        })
        .await;
        service
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn job_created_before_a_sigkill_still_fires_after_restart() {
    let data = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let due = in_millis(3_000);

    let mut first = Service::start(data.path()).await;
    let response = http
        .post(first.url("/api/v1/jobs"))
        .json(&email_job("survives a crash", &due))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let job: Value = response.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    first.child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
    first.child.wait().unwrap();
    drop(first);
    let killed_at = chrono::Utc::now();

    // Restart after the due time: the job fires from the store, not from a lost timer.
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    let second = Service::start(data.path()).await;
    let job = eventually("the job to fire after the restart", || {
        let request = http.get(second.url(&format!("/api/v1/jobs/{id}"))).send();
        async move {
            let job: Value = request.await.ok()?.json().await.ok()?;
            (job["status"] == "RUNNING").then_some(job)
        }
    })
    .await;
    assert_eq!(job["name"], "survives a crash");
    let runs: Value = http
        .get(second.url(&format!("/api/v1/jobs/{id}/runs")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(runs["totalCount"], 1);
    assert_eq!(
        runs["runs"][0]["scheduledFor"], job["schedule"]["runAt"],
        "the run is for the stored due time"
    );
    let fired_at =
        scheduler::domain::parse_time(runs["runs"][0]["firedAt"].as_str().unwrap()).unwrap();
    assert!(
        fired_at > killed_at,
        "the first process fired it before the kill"
    );
}

#[tokio::test]
async fn sigterm_stops_the_service_gracefully() {
    let data = tempfile::tempdir().unwrap();
    let mut service = Service::start(data.path()).await;
    let status = Command::new("kill")
        .args(["-TERM", &service.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = eventually("the service to exit", || {
        let exited = service.child.try_wait().unwrap();
        async move { exited }
    })
    .await;
    assert!(exit.success(), "exit status {exit:?}");
}
