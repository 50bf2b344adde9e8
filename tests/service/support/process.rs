//! The real `scheduler` binary as a child process, on a free port.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
};

use super::{net::free_port, wait::eventually};

/// A running `scheduler` process; killed when dropped.
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
        Self::start_probing(flags, &[], None, "http", reqwest::Client::new()).await
    }

    /// As `start_args`, with these environment variables (`RUST_LOG` among them overrides
    /// the default `warn`) and its log lines (stdout) written to `log` when given.
    pub async fn start_env(flags: &[String], env: &[(&str, String)], log: Option<&Path>) -> Self {
        Self::start_probing(flags, env, log, "http", reqwest::Client::new()).await
    }

    /// As `start_args`, for flags that turn TLS on: the readiness probe and `url` speak
    /// HTTPS, trusting `ca`.
    pub async fn start_tls(flags: &[String], ca: reqwest::Certificate) -> Self {
        let client = reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()
            .unwrap();
        Self::start_probing(flags, &[], None, "https", client).await
    }

    /// Starts the binary and waits until `http` gets 200 from `/healthz` over `scheme`.
    async fn start_probing(
        flags: &[String],
        env: &[(&str, String)],
        log: Option<&Path>,
        scheme: &str,
        http: reqwest::Client,
    ) -> Self {
        let port = free_port();
        let stdout = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("log file created")),
            None => Stdio::null(),
        };
        let child = Command::new(env!("CARGO_BIN_EXE_scheduler"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(flags)
            .env("RUST_LOG", "warn")
            // Registered in etcd, publishing to Kafka, and traced, only when a test asks.
            .env_remove("ETCD_ENDPOINTS")
            .env_remove("KAFKA_BROKERS")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(stdout)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the binary starts");
        let service = Self {
            child,
            base: format!("{scheme}://127.0.0.1:{port}"),
        };
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

    /// GETs `path` without credentials; the JSON answer.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        reqwest::get(self.url(path))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// POSTs `body` to `/api/v1/jobs`; the job created (the answer must be 201).
    pub async fn create_job(&self, body: &serde_json::Value) -> serde_json::Value {
        self.create_job_with(body, &[]).await
    }

    /// POSTs `body` to `/api/v1/jobs` with `headers`; the job created (the answer must be 201).
    pub async fn create_job_with(
        &self,
        body: &serde_json::Value,
        headers: &[(&str, &str)],
    ) -> serde_json::Value {
        let mut request = reqwest::Client::new()
            .post(self.url("/api/v1/jobs"))
            .json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }
}

/// The binary with `args`, on an in-memory store and a free port, with nothing from this
/// process's environment: for start-up that is meant to fail.
pub fn scheduler_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_scheduler"));
    command
        .env_clear()
        .args(["--host", "127.0.0.1", "--port", "0", "--store", "memory"])
        .args(args);
    command
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
