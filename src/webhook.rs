//! The webhook caller: POSTs each run that goes by webhook to its job's URL, signed per the
//! Standard Webhooks spec, and records what the target answered.
//!
//! It takes runs as a pulling worker does (`jobs::claims`), held for the call's timeout and a
//! margin, so a replica that dies mid-call leaves the run to be called again (the same
//! `webhook-id`, which the target can drop as a copy) and two replicas never call one run at
//! once. What the answer means:
//!
//! | answer | the run |
//! |---|---|
//! | 2xx, empty or `{"status": "SUCCEEDED"}` (or any other body) | SUCCEEDED |
//! | 2xx `{"status": "FAILED", "error": ...}` | FAILED: a failed attempt, the job's retry policy applies |
//! | 202 | stays open for the target to report later (held until its run timeout) |
//! | 3xx (redirects are not followed), 4xx, 5xx | FAILED |
//! | no answer within `--webhook-timeout-seconds`, or no connection | FAILED |
//!
//! A host that left the allow-list since the job was written is not called: FAILED. Nothing of
//! the URL's query, the headers or the secret is logged.

use std::{sync::Arc, time::Duration};

use base64::Engine;
use chrono::Utc;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::{
    domain::{
        Delivery, RunResult, RunStatus, Webhook,
        run::{MAX_ERROR_BYTES, MAX_OUTPUT_BYTES},
    },
    jobs::{
        Error, Jobs,
        claims::{ClaimRequest, ClaimedRun},
        webhooks::AllowedHosts,
    },
    rest::views::{JobView, RunView},
    runtime::{Backoff, Outage},
};

/// Calls made at once, at most.
const CONCURRENCY: usize = 32;
/// How long a claim waits for runs before it looks again (woken at once by this process's
/// fires).
const CLAIM_WAIT: Duration = Duration::from_secs(5);
/// How much longer than a call's timeout a run taken for it is held.
const HOLD_MARGIN: Duration = Duration::from_secs(5);
/// Most bytes of an answer read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The webhook caller.
pub struct WebhookCaller {
    jobs: Jobs,
    client: reqwest::Client,
    timeout: Duration,
    hosts: AllowedHosts,
}

/// What became of one call.
#[derive(Debug, PartialEq)]
enum Answer {
    /// The run ended so.
    Finished(RunResult),
    /// The target took it and reports later.
    Accepted,
}

impl WebhookCaller {
    /// A caller of the webhooks of `jobs`' runs, each call bounded by `timeout`, to `hosts`.
    pub fn new(jobs: Jobs, timeout: Duration, hosts: AllowedHosts) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .user_agent(concat!("scheduler/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            jobs,
            client,
            timeout,
            hosts,
        })
    }

    /// Takes and calls runs until `shutdown`; calls in flight then finish (each bounded by
    /// the timeout).
    pub async fn run(self, shutdown: CancellationToken) {
        let caller = Arc::new(self);
        let slots = Arc::new(Semaphore::new(CONCURRENCY));
        let mut outage = Outage::new(
            "the webhook caller cannot take runs; retrying",
            "the webhook caller takes runs again",
            Backoff::new(Duration::from_millis(200), Duration::from_secs(5)),
        );
        let mut calls = tokio::task::JoinSet::new();
        while !shutdown.is_cancelled() {
            // Only as many runs as there are free slots: the others stay offered.
            let Ok(first) = slots.clone().acquire_owned().await else {
                break;
            };
            let free = 1 + slots.available_permits();
            let request = ClaimRequest {
                job_types: Vec::new(),
                max: free,
                wait: CLAIM_WAIT,
                lease: caller.timeout + HOLD_MARGIN,
            };
            let taken = caller
                .jobs
                .claim_runs(Delivery::Webhook, &request, None, &shutdown)
                .await;
            let taken = match taken {
                Ok(taken) => {
                    outage.recovered();
                    taken
                }
                Err(error) => {
                    drop(first);
                    let wait = outage.failed(&error);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = shutdown.cancelled() => {}
                    }
                    continue;
                }
            };
            let mut first = Some(first);
            for claimed in taken {
                let slot = match first.take() {
                    Some(slot) => slot,
                    None => match slots.clone().try_acquire_owned() {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                };
                let caller = caller.clone();
                calls.spawn(async move {
                    caller.deliver(claimed).await;
                    drop(slot);
                });
            }
            while calls.try_join_next().is_some() {}
        }
        while calls.join_next().await.is_some() {}
    }

    /// Calls a run's webhook and records the answer.
    async fn deliver(&self, claimed: ClaimedRun) {
        let (job_id, run_id) = (claimed.job.id, claimed.run.run_id);
        let answer = match &claimed.job.webhook {
            None => Answer::Finished(failed("the job has no webhook any more".into())),
            Some(webhook) => self.call(webhook, &claimed).await,
        };
        let recorded = match answer {
            Answer::Accepted => {
                let deadline = claimed.job.deadline(&claimed.run)
                    + chrono::Duration::from_std(HOLD_MARGIN).unwrap_or_default();
                tracing::info!(%job_id, %run_id, "webhook accepted the run; it reports later");
                self.jobs.hold_run(job_id, run_id, deadline).await
            }
            Answer::Finished(result) => {
                let status = crate::domain::name_of(&result.status);
                tracing::info!(%job_id, %run_id, status = %status, error = result.error.as_deref(), "webhook answered");
                match self.jobs.apply_result(job_id, Some(run_id), result).await {
                    // The target (or another taker) reported first: its result stands.
                    Ok(_) | Err(Error::Conflict(_) | Error::NotFound(_)) => Ok(()),
                    Err(e) => Err(e),
                }
            }
        };
        if let Err(error) = recorded {
            tracing::warn!(%job_id, %run_id, error = ?error, "a webhook's answer could not be recorded; the run is called again when its hold lapses");
        }
    }

    /// One call: the run and its job as JSON, signed, to the webhook's URL.
    async fn call(&self, webhook: &Webhook, claimed: &ClaimedRun) -> Answer {
        let host = webhook.host().unwrap_or_default();
        if !self.hosts.allows(&host) {
            return Answer::Finished(failed(format!(
                "the host {host} is no longer on the allow-list (--webhook-allowed-hosts)"
            )));
        }
        let body = json!({
            "type": "scheduler.job.run",
            "run": RunView::from(&claimed.run),
            "job": JobView::from(&claimed.job),
        })
        .to_string();
        let id = claimed.run.run_id.to_string();
        let timestamp = Utc::now().timestamp().to_string();
        let mut request = self
            .client
            .post(&webhook.url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", &timestamp);
        if let Some(key) = webhook.key() {
            request = request.header("webhook-signature", signature(&key, &id, &timestamp, &body));
        }
        for (name, value) in &webhook.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let response = match request.body(body).send().await {
            Ok(response) => response,
            Err(error) if error.is_timeout() => {
                return Answer::Finished(failed(format!(
                    "the webhook did not answer within {} s",
                    self.timeout.as_secs()
                )));
            }
            // The error's text names the URL, which may carry a token: the kind only.
            Err(error) if error.is_connect() => {
                return Answer::Finished(failed(format!(
                    "the webhook at {host} could not be reached"
                )));
            }
            Err(_) => {
                return Answer::Finished(failed(format!(
                    "the call to the webhook at {host} failed"
                )));
            }
        };
        let status = response.status();
        if status == reqwest::StatusCode::ACCEPTED {
            return Answer::Accepted;
        }
        if status.is_redirection() {
            return Answer::Finished(failed(format!(
                "the webhook answered {} (redirects are not followed)",
                status.as_u16()
            )));
        }
        if !status.is_success() {
            return Answer::Finished(failed(format!("the webhook answered {}", status.as_u16())));
        }
        let text = read_answer(response).await;
        Answer::Finished(meaning(&text))
    }
}

/// What a 2xx answer's body says: `{"status": "FAILED", "error": ...}` is a failed attempt,
/// anything else (empty, `{"status": "SUCCEEDED", "output": ...}`, other text) a success.
fn meaning(text: &str) -> RunResult {
    let answer: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let field = |name: &str, max: usize| {
        answer
            .get(name)
            .and_then(Value::as_str)
            .map(|s| truncate(s, max))
    };
    match answer.get("status").and_then(Value::as_str) {
        Some("FAILED") => failed(
            field("error", MAX_ERROR_BYTES).unwrap_or_else(|| "the webhook reported FAILED".into()),
        ),
        _ => RunResult {
            status: RunStatus::Succeeded,
            error: None,
            output: field("output", MAX_OUTPUT_BYTES).filter(|o| !o.is_empty()),
        },
    }
}

/// A failed attempt, for `why`.
fn failed(why: String) -> RunResult {
    RunResult {
        status: RunStatus::Failed,
        error: Some(truncate(&why, MAX_ERROR_BYTES)),
        output: None,
    }
}

/// At most `max` bytes of `text`, cut on a character boundary.
fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// The first [`MAX_ANSWER_BYTES`] of an answer's body.
async fn read_answer(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_ANSWER_BYTES {
            body.truncate(MAX_ANSWER_BYTES);
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// The Standard Webhooks signature of a call: `v1,` and the base64 HMAC-SHA256 of
/// `{id}.{timestamp}.{body}` under the secret's key.
pub fn signature(key: &[u8], id: &str, timestamp: &str, body: &str) -> String {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let digest = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_matches_the_standard_webhooks_example() {
        let webhook = crate::domain::WebhookInput {
            url: "https://example.com".into(),
            headers: None,
            secret: Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
        }
        .parse()
        .unwrap();
        let signed = signature(
            &webhook.key().unwrap(),
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(signed, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_2xx_answer_succeeds_unless_it_says_failed() {
        let cases = [
            ("", RunStatus::Succeeded, None, None),
            ("OK", RunStatus::Succeeded, None, None),
            (
                r#"{"status": "SUCCEEDED", "output": "sent"}"#,
                RunStatus::Succeeded,
                None,
                Some("sent"),
            ),
            (
                r#"{"status": "FAILED", "error": "mailbox full"}"#,
                RunStatus::Failed,
                Some("mailbox full"),
                None,
            ),
            (
                r#"{"status": "FAILED"}"#,
                RunStatus::Failed,
                Some("the webhook reported FAILED"),
                None,
            ),
        ];
        for (body, status, error, output) in cases {
            let result = meaning(body);
            assert_eq!(result.status, status, "{body}");
            assert_eq!(result.error.as_deref(), error, "{body}");
            assert_eq!(result.output.as_deref(), output, "{body}");
        }
    }
}
