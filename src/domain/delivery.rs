//! How a run reaches whoever does the work: a job's webhook, Kafka, or workers that pull; and
//! the hold a worker (or the webhook caller) has on a run while it works.
//!
//! A run's way is decided when it fires ([`Delivery::of`]) and kept with the run, so a change
//! of configuration never sends one run two ways. A webhook is checked here for its shape (an
//! `http` or `https` URL with a host, headers a request may carry, a Standard Webhooks secret);
//! whether its host may be called is the configuration's to say, outside the core.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::field::{Errors, Invalid};

/// Where a job's runs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// POSTed to the job's webhook.
    Webhook,
    /// Published to the run topic, for Kafka executors.
    Kafka,
    /// Held for workers that ask for runs (`POST /api/v1/runs:claim`).
    Pull,
}

impl Delivery {
    /// The way a run of a job goes: the job's own choice, else its webhook when it has one,
    /// else `default` (Kafka when brokers are configured, else pulling workers).
    pub fn of(chosen: Option<Self>, has_webhook: bool, default: Self) -> Self {
        match (chosen, has_webhook) {
            (Some(chosen), _) => chosen,
            (None, true) => Self::Webhook,
            (None, false) => default,
        }
    }

    /// Its name, as the API writes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Kafka => "kafka",
            Self::Pull => "pull",
        }
    }
}

/// Longest a worker's claim may wait for runs, in seconds.
pub const MAX_CLAIM_WAIT_SECONDS: i64 = 60;

/// Most headers a webhook may add to its calls.
pub const MAX_WEBHOOK_HEADERS: usize = 20;
/// Longest URL or header value of a webhook, in bytes.
pub const MAX_WEBHOOK_TEXT: usize = 2048;
/// The prefix of a Standard Webhooks secret, before its base64 key.
pub const SECRET_PREFIX: &str = "whsec_";

/// A webhook as a client sends it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookInput {
    /// Where each run is POSTed: an `http` or `https` URL whose host the service may call
    /// (`--webhook-allowed-hosts`).
    #[schema(example = "https://hooks.example.com/scheduler")]
    pub url: String,
    /// Headers sent with each call (not `Content-Type`, `Host`, `Content-Length` nor the
    /// `webhook-*` ones the service sets); their values are never shown again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// The signing secret, `whsec_` and a base64 key of 24 to 64 bytes: each call is signed
    /// with it per the Standard Webhooks spec. Write-only: never returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: Option<String>,
}

/// A checked webhook.
#[derive(Clone, PartialEq, Eq)]
pub struct Webhook {
    /// An `http` or `https` URL with a host.
    pub url: String,
    /// Header names (as given) and values.
    pub headers: BTreeMap<String, String>,
    /// The signing secret as given (`whsec_` and base64), if any.
    pub secret: Option<String>,
}

impl std::fmt::Debug for Webhook {
    /// The URL and header names only: values and the secret may be credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.url)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("secret", &self.secret.as_ref().map(|_| "set"))
            .finish()
    }
}

/// Headers a webhook may not set: the service's own, and those of the connection.
const RESERVED_HEADERS: [&str; 9] = [
    "content-type",
    "content-length",
    "host",
    "connection",
    "transfer-encoding",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "traceparent",
];

impl WebhookInput {
    /// Checks the webhook's shape, naming each fault under `webhook.`.
    pub fn parse(self) -> Result<Webhook, Invalid> {
        let mut errors = Errors::new();
        match host_of(&self.url) {
            Some(_) if self.url.len() <= MAX_WEBHOOK_TEXT => {}
            _ => errors.push(
                "webhook.url",
                format!(
                    "must be an http or https URL with a host, at most {MAX_WEBHOOK_TEXT} bytes"
                ),
            ),
        }
        let headers = self.headers.unwrap_or_default();
        if headers.len() > MAX_WEBHOOK_HEADERS {
            errors.push(
                "webhook.headers",
                format!("must hold at most {MAX_WEBHOOK_HEADERS} headers"),
            );
        }
        for (name, value) in &headers {
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token || RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                errors.push(
                    &format!("webhook.headers.{name}"),
                    "must be a header name the service does not set itself",
                );
            }
            let visible = value
                .bytes()
                .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic());
            if !visible || value.len() > MAX_WEBHOOK_TEXT {
                errors.push(
                    &format!("webhook.headers.{name}"),
                    format!("must be visible ASCII, at most {MAX_WEBHOOK_TEXT} bytes"),
                );
            }
        }
        if let Some(secret) = &self.secret
            && secret_key(secret).is_none()
        {
            errors.push(
                "webhook.secret",
                format!("must be {SECRET_PREFIX} and the base64 of a 24 to 64 byte key"),
            );
        }
        errors.finish(|| {
            Some(Webhook {
                url: self.url,
                headers,
                secret: self.secret,
            })
        })
    }
}

impl From<&Webhook> for WebhookInput {
    /// The webhook as a client would send it again (the secret included: this is the job's
    /// own document, never a view).
    fn from(webhook: &Webhook) -> Self {
        Self {
            url: webhook.url.clone(),
            headers: (!webhook.headers.is_empty()).then(|| webhook.headers.clone()),
            secret: webhook.secret.clone(),
        }
    }
}

impl Webhook {
    /// The host (and port, when the URL gives one) the webhook calls.
    pub fn host(&self) -> Option<String> {
        host_of(&self.url)
    }

    /// The HMAC key of the secret, if there is one.
    pub fn key(&self) -> Option<Vec<u8>> {
        self.secret.as_deref().and_then(secret_key)
    }
}

/// The `host` or `host:port` of an `http` or `https` URL, lowercased; `None` for anything
/// else (another scheme, credentials in the URL, no host).
pub fn host_of(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "http" | "https")
        || !parsed.username().is_empty()
        || parsed.password().is_some()
    {
        return None;
    }
    let host = parsed.host_str()?.to_ascii_lowercase();
    Some(match parsed.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    })
}

/// The key of a Standard Webhooks secret: the base64 after `whsec_`, 24 to 64 bytes.
fn secret_key(secret: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let encoded = secret.strip_prefix(SECRET_PREFIX)?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    (24..=64).contains(&key.len()).then_some(key)
}

/// A worker's hold on an open run: until it lapses, the run is offered to no one else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLease {
    /// Who holds it: the caller's subject when access control is on, else none.
    pub holder: Option<String>,
    /// When it lapses and the run is offered again, with the same run id.
    pub until: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_way_is_the_jobs_choice_else_its_webhook_else_the_default() {
        use Delivery::*;
        assert_eq!(Delivery::of(Some(Pull), true, Kafka), Pull);
        assert_eq!(Delivery::of(None, true, Kafka), Webhook);
        assert_eq!(Delivery::of(None, false, Kafka), Kafka);
        assert_eq!(Delivery::of(None, false, Pull), Pull);
    }

    #[test]
    fn a_webhook_is_checked_for_its_url_headers_and_secret() {
        let good = WebhookInput {
            url: "https://Hooks.Example.com:8443/in".into(),
            headers: Some(BTreeMap::from([("X-Team".into(), "ops".into())])),
            secret: Some(format!("{SECRET_PREFIX}{}", "A".repeat(32))),
        }
        .parse()
        .unwrap();
        assert_eq!(good.host().as_deref(), Some("hooks.example.com:8443"));
        assert_eq!(good.key().map(|k| k.len()), Some(24));
        assert!(
            !format!("{good:?}").contains("AAAA"),
            "the secret is not shown"
        );
        let Err(Invalid(errors)) = WebhookInput {
            url: "ftp://user:pw@example.com/".into(),
            headers: Some(BTreeMap::from([
                ("Content-Type".into(), "text/plain".into()),
                ("X-Bad".into(), "line\nbreak".into()),
            ])),
            secret: Some("plain".into()),
        }
        .parse() else {
            panic!("a bad webhook was accepted")
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "webhook.headers.Content-Type",
                "webhook.headers.X-Bad",
                "webhook.secret",
                "webhook.url"
            ]
        );
        for url in [
            "http://user@example.com/",
            "mailto:a@example.com",
            "https://",
            "/relative",
        ] {
            assert_eq!(host_of(url), None, "{url}");
        }
    }
}
