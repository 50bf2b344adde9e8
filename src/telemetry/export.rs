//! The HTTP client the OTLP exporter sends with: the service's own `reqwest`, on the tokio
//! runtime that installed it (the exporter's batch thread has no runtime of its own).

use std::time::Duration;

use async_trait::async_trait;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};

/// Longest answer read from the collector; an OTLP answer is a few bytes.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Sends each export on the runtime it was made on.
#[derive(Debug)]
pub(super) struct Client {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl Client {
    /// A client for the current runtime.
    pub(super) fn new() -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()?,
            runtime: tokio::runtime::Handle::try_current()?,
        })
    }
}

#[async_trait]
impl HttpClient for Client {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let http = self.http.clone();
        let sent = self.runtime.spawn(async move {
            let request = reqwest::Request::try_from(request)?;
            let mut answer = http.execute(request).await?;
            let mut response = Response::builder().status(answer.status());
            if let Some(headers) = response.headers_mut() {
                *headers = std::mem::take(answer.headers_mut());
            }
            let mut body = Vec::new();
            while let Some(chunk) = answer.chunk().await? {
                if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err::<_, HttpError>("the collector's answer is too large".into());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(response.body(Bytes::from(body))?)
        });
        sent.await?
    }
}
