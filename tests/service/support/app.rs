//! The real service in this process, on a free loopback port, and a client of it.

use std::{collections::VecDeque, net::SocketAddr, sync::Arc, time::Duration};

use scheduler::{
    app::Application,
    config::Config,
    domain::{Event, EventKind},
    grpc::pb::jobs_service_client::JobsServiceClient,
    jobs::ports::JobStore,
};
use serde_json::Value;

use super::wait::eventually;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// The service running in this process on a free loopback port, with an in-memory store.
pub struct TestApp {
    pub addr: SocketAddr,
    jobs: scheduler::jobs::Jobs,
    pub http: reqwest::Client,
    /// The events stored, read from the store's journal.
    events: Journal,
    shutdown: CancellationToken,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// `https` when the config has TLS files, else `http`.
    scheme: &'static str,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(Config::for_tests()).await
    }

    pub async fn spawn_with(config: Config) -> Self {
        let scheme = if config.tls_cert_file.is_some() {
            "https"
        } else {
            "http"
        };
        let app = Application::build(config)
            .await
            .expect("the service builds");
        Self::started(app, scheme)
    }

    /// The service over a store made by the test.
    pub async fn spawn_with_store(config: Config, store: Arc<dyn JobStore>) -> Self {
        let app = Application::with_store(config, store)
            .await
            .expect("the service builds");
        Self::started(app, "http")
    }

    fn started(app: Application, scheme: &'static str) -> Self {
        let addr = app.local_addr();
        let events = Journal {
            store: app.store(),
            read_up_to: 0,
            unread: VecDeque::new(),
        };
        let jobs = app.jobs();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(app.run(shutdown.clone()));
        Self {
            addr,
            jobs,
            http: reqwest::Client::new(),
            events,
            shutdown,
            handle: Some(handle),
            scheme,
        }
    }

    /// The store the service uses, for what a test does behind its back.
    pub fn store(&self) -> Arc<dyn JobStore> {
        self.events.store.clone()
    }

    /// The use cases, for set-ups faster than HTTP.
    pub fn jobs(&self) -> &scheduler::jobs::Jobs {
        &self.jobs
    }

    /// The URL of `path`, `https` when the service serves TLS.
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    pub async fn post_job(&self, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url("/api/v1/jobs"))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// Creates a job and returns its JSON.
    pub async fn create_job(&self, body: &Value) -> Value {
        let response = self.post_job(body).await;
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
        response.json().await.unwrap()
    }

    pub async fn get_job(&self, id: &str) -> Value {
        let response = self
            .http
            .get(self.url(&format!("/api/v1/jobs/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// Deletes a job, expecting 204.
    pub async fn delete_job(&self, id: &str) {
        let response = self
            .http
            .delete(self.url(&format!("/api/v1/jobs/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204, "{:?}", response.text().await);
    }

    /// GETs `path` and returns its JSON body, whatever the status.
    pub async fn get_json(&self, path: &str) -> Value {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// PATCHes `path` with a JSON merge patch.
    pub async fn patch(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .patch(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// POSTs `body` to `path`; the status and the JSON body (null when there is none).
    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A job's runs, newest first (up to 100).
    pub async fn runs(&self, id: &str) -> Vec<Value> {
        self.get_json(&format!("/api/v1/jobs/{id}/runs?size=100"))
            .await["runs"]
            .as_array()
            .expect("a page of runs")
            .clone()
    }

    /// Waits until the job has `status`, and returns it.
    pub async fn job_with_status(&self, id: &str, status: &str) -> Value {
        eventually(&format!("job {id} to be {status}"), || async {
            let job = self.get_job(id).await;
            (job["status"] == status).then_some(job)
        })
        .await
    }

    /// How many jobs are stored.
    pub async fn job_count(&self) -> u64 {
        self.get_json("/api/v1/jobs").await["totalCount"]
            .as_u64()
            .expect("a count")
    }

    pub async fn grpc(&self) -> JobsServiceClient<Channel> {
        JobsServiceClient::new(self.channel().await)
    }

    /// An HTTP/2 cleartext (h2c) channel to the service's port, for any gRPC client.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .expect("gRPC connects")
    }

    /// Waits for the next event of `kind` for job `id` (bounded, so a missing event fails).
    pub async fn next_event(&mut self, kind: EventKind, id: &str) -> Arc<Event> {
        let wait = async {
            loop {
                let event = self.next_published().await;
                if event.kind == kind && event.job.id.to_string() == id {
                    return event;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(20), wait)
            .await
            .unwrap_or_else(|_| panic!("no {kind:?} event for job {id}"))
    }

    /// The events stored since the last look, without waiting: a call's events are stored by
    /// the time its response is.
    pub async fn published(&mut self) -> Vec<Arc<Event>> {
        self.events.read().await;
        self.events.unread.drain(..).collect()
    }

    /// The next event stored, waiting for it.
    async fn next_published(&mut self) -> Arc<Event> {
        loop {
            if let Some(event) = self.events.unread.pop_front() {
                return event;
            }
            if !self.events.read().await {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    /// Waits for the next run event of any job.
    pub async fn next_any_run(&mut self) -> Arc<Event> {
        loop {
            let event = self.next_published().await;
            if event.kind == EventKind::Run {
                return event;
            }
        }
    }

    /// Stops the service gracefully and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let handle = self.handle.take().unwrap();
        tokio::time::timeout(Duration::from_secs(20), handle)
            .await
            .expect("the service stops")
            .unwrap()
            .unwrap();
    }
}

/// The store's journal, as the test has read it.
struct Journal {
    store: Arc<dyn JobStore>,
    read_up_to: u64,
    unread: VecDeque<Arc<Event>>,
}

impl Journal {
    /// Reads every event stored after what was read; whether there were any.
    async fn read(&mut self) -> bool {
        let mut any = false;
        loop {
            let page = self
                .store
                .read_journal(self.read_up_to, None, 100)
                .await
                .expect("the journal reads");
            let Some(last) = page.last() else {
                return any;
            };
            self.read_up_to = last.seq;
            any = true;
            self.unread
                .extend(page.into_iter().map(|journaled| Arc::new(journaled.event)));
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
