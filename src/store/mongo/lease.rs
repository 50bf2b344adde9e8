//! A job's webhook and a worker's hold on an open run, as their MongoDB documents hold them.

use serde::{Deserialize, Serialize};

use crate::domain::Webhook;

/// A webhook in a job document: its headers as name and value pairs (a header name may hold a
/// dot, which a field name should not).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WebhookDoc {
    url: String,
    #[serde(default)]
    headers: Vec<HeaderDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct HeaderDoc {
    name: String,
    value: String,
}

impl From<&Webhook> for WebhookDoc {
    fn from(webhook: &Webhook) -> Self {
        let Webhook {
            url,
            headers,
            secret,
        } = webhook;
        Self {
            url: url.clone(),
            headers: headers
                .iter()
                .map(|(name, value)| HeaderDoc {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            secret: secret.clone(),
        }
    }
}

impl From<WebhookDoc> for Webhook {
    fn from(stored: WebhookDoc) -> Self {
        let WebhookDoc {
            url,
            headers,
            secret,
        } = stored;
        Self {
            url,
            headers: headers.into_iter().map(|h| (h.name, h.value)).collect(),
            secret,
        }
    }
}

/// A worker's hold on an open run.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RunLeaseDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) holder: Option<String>,
    pub(super) until: bson::DateTime,
}
