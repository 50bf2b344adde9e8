//! The few calls of etcd's v3 API that registration needs, over its JSON gateway (the
//! `/v3/...` paths every etcd since 3.4 serves on its client port): grant, keep alive and
//! revoke a lease, put a key on it, read a key back.
//!
//! The gateway rather than etcd's gRPC API because it needs nothing the service does not
//! already build (reqwest, serde, base64), no generated code and no `protoc`; keys and values
//! travel base64-encoded, 64-bit numbers as strings, and a field at its zero value is left out.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use base64::{Engine, engine::general_purpose::STANDARD};
use reqwest::Url;
use serde::{Deserialize, Deserializer, de::DeserializeOwned};
use serde_json::{Value, json};

/// An etcd cluster, reached through any of its endpoints.
#[derive(Debug)]
pub(crate) struct Etcd {
    http: reqwest::Client,
    endpoints: Vec<Url>,
    /// The endpoint that answered last, tried first next time.
    current: AtomicUsize,
}

/// Why an etcd call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EtcdError {
    /// No endpoint could be reached, or none answered in time.
    #[error("no etcd endpoint answered: {0}")]
    Unreachable(#[source] reqwest::Error),
    /// etcd answered with an error (gRPC `code`, etcd's message).
    #[error("etcd refused the call (code {code}): {message}")]
    Refused {
        /// The gRPC status code etcd gave; 5 (NOT_FOUND) for an unknown lease.
        code: i64,
        /// etcd's message.
        message: String,
    },
    /// etcd answered something that is not what its API says.
    #[error("etcd answered {path} with an unexpected body: {reason}")]
    Unexpected {
        /// The call.
        path: &'static str,
        /// What was wrong with the answer.
        reason: String,
    },
}

/// A granted lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lease {
    /// etcd's id of the lease.
    pub(crate) id: i64,
    /// The time to live etcd granted, in seconds (it may round a short one up).
    pub(crate) ttl: i64,
}

/// A key's value and the lease it is attached to (0 for none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) value: String,
    pub(crate) lease: i64,
}

impl Etcd {
    /// A client of the cluster at `endpoints`, each call bounded by `timeout`.
    pub(crate) fn new(endpoints: Vec<Url>, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .timeout(timeout)
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build the etcd client: {e}"))?;
        Ok(Self {
            http,
            endpoints,
            current: AtomicUsize::new(0),
        })
    }

    /// Grants a lease of `ttl` seconds.
    pub(crate) async fn grant(&self, ttl: u64) -> Result<Lease, EtcdError> {
        #[derive(Deserialize)]
        struct Granted {
            #[serde(rename = "ID", default, deserialize_with = "int64")]
            id: i64,
            #[serde(rename = "TTL", default, deserialize_with = "int64")]
            ttl: i64,
        }
        const PATH: &str = "/v3/lease/grant";
        let granted: Granted = self.call(PATH, json!({ "TTL": ttl.to_string() })).await?;
        if granted.id == 0 {
            return Err(unexpected(PATH, "no lease id"));
        }
        Ok(Lease {
            id: granted.id,
            ttl: granted.ttl,
        })
    }

    /// Sets `key` to `value`, attached to `lease`: it goes when the lease does.
    pub(crate) async fn put(&self, key: &str, value: &str, lease: i64) -> Result<(), EtcdError> {
        let body = json!({
            "key": STANDARD.encode(key),
            "value": STANDARD.encode(value),
            "lease": lease.to_string(),
        });
        let _: Value = self.call("/v3/kv/put", body).await?;
        Ok(())
    }

    /// Renews `lease`; its remaining time to live in seconds, or `None` when etcd no longer
    /// has it (it expired or was revoked).
    pub(crate) async fn keep_alive(&self, lease: i64) -> Result<Option<i64>, EtcdError> {
        #[derive(Deserialize)]
        struct Stream {
            result: Option<Renewed>,
        }
        #[derive(Deserialize)]
        struct Renewed {
            #[serde(rename = "TTL", default, deserialize_with = "int64")]
            ttl: i64,
        }
        const PATH: &str = "/v3/lease/keepalive";
        // A streaming call on gRPC; over the gateway one request gets one message, wrapped.
        let answer: Stream = self.call(PATH, json!({ "ID": lease.to_string() })).await?;
        let renewed = answer.result.ok_or_else(|| unexpected(PATH, "no result"))?;
        Ok((renewed.ttl > 0).then_some(renewed.ttl))
    }

    /// Revokes `lease`, deleting every key attached to it; a lease etcd no longer has is
    /// already gone, which is no error.
    pub(crate) async fn revoke(&self, lease: i64) -> Result<(), EtcdError> {
        match self
            .call::<Value>("/v3/lease/revoke", json!({ "ID": lease.to_string() }))
            .await
        {
            Ok(_) | Err(EtcdError::Refused { code: 5, .. }) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// The value of `key` and its lease, if the key exists.
    pub(crate) async fn get(&self, key: &str) -> Result<Option<Entry>, EtcdError> {
        #[derive(Deserialize)]
        struct Range {
            #[serde(default)]
            kvs: Vec<KeyValue>,
        }
        #[derive(Deserialize)]
        struct KeyValue {
            #[serde(default)]
            value: String,
            #[serde(default, deserialize_with = "int64")]
            lease: i64,
        }
        const PATH: &str = "/v3/kv/range";
        let range: Range = self
            .call(PATH, json!({ "key": STANDARD.encode(key) }))
            .await?;
        let Some(found) = range.kvs.into_iter().next() else {
            return Ok(None);
        };
        let value = STANDARD
            .decode(found.value)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| unexpected(PATH, "a value that is not base64 of UTF-8"))?;
        Ok(Some(Entry {
            value,
            lease: found.lease,
        }))
    }

    /// POSTs `body` to `path`, starting with the endpoint that answered last and moving on to
    /// the next while one cannot be reached.
    async fn call<T: DeserializeOwned>(
        &self,
        path: &'static str,
        body: Value,
    ) -> Result<T, EtcdError> {
        let count = self.endpoints.len();
        let first = self.current.load(Ordering::Relaxed);
        let mut unreachable = None;
        for step in 0..count {
            let index = (first + step) % count;
            let Ok(url) = self.endpoints[index].join(path) else {
                continue;
            };
            let response = match self.http.post(url).json(&body).send().await {
                Ok(response) => response,
                Err(error) => {
                    unreachable = Some(error);
                    continue;
                }
            };
            self.current.store(index, Ordering::Relaxed);
            let status = response.status();
            let text = response.text().await.map_err(EtcdError::Unreachable)?;
            if !status.is_success() {
                return Err(refused(path, status, &text));
            }
            // A streamed answer may carry more than one message, a line each: the first counts.
            let first_message = text.lines().next().unwrap_or_default();
            return serde_json::from_str(first_message).map_err(|e| unexpected(path, e));
        }
        Err(match unreachable {
            Some(error) => EtcdError::Unreachable(error),
            None => unexpected(path, "no endpoint URL takes this path"),
        })
    }
}

/// The error of a call etcd answered with a failure status.
fn refused(path: &'static str, status: reqwest::StatusCode, text: &str) -> EtcdError {
    #[derive(Deserialize)]
    struct Failure {
        #[serde(default)]
        code: i64,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_str::<Failure>(text) {
        Ok(Failure { code, message }) => EtcdError::Refused { code, message },
        Err(_) => unexpected(path, format!("status {status}")),
    }
}

fn unexpected(path: &'static str, reason: impl ToString) -> EtcdError {
    EtcdError::Unexpected {
        path,
        reason: reason.to_string(),
    }
}

/// A 64-bit integer as the gateway writes it: a string of digits (or, leniently, a number).
fn int64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int64 {
        Text(String),
        Number(i64),
    }
    match Int64::deserialize(deserializer)? {
        Int64::Number(n) => Ok(n),
        Int64::Text(text) => text.parse().map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateways_numbers_are_read_from_strings_or_numbers_and_default_to_zero() {
        #[derive(Deserialize)]
        struct Probe {
            #[serde(rename = "ID", default, deserialize_with = "int64")]
            id: i64,
        }
        let read = |text: &str| serde_json::from_str::<Probe>(text).map(|p| p.id).ok();
        assert_eq!(
            read(r#"{"ID":"2324035754177620743"}"#),
            Some(2324035754177620743)
        );
        assert_eq!(read(r#"{"ID":42}"#), Some(42));
        assert_eq!(read("{}"), Some(0));
        assert_eq!(read(r#"{"ID":"x"}"#), None);
    }

    #[test]
    fn an_error_answer_keeps_etcds_code_and_message() {
        let body = r#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#;
        let error = refused("/v3/lease/revoke", reqwest::StatusCode::NOT_FOUND, body);
        assert!(
            matches!(&error, EtcdError::Refused { code: 5, message } if message.ends_with("lease not found")),
            "{error:?}"
        );
        let error = refused("/v3/kv/put", reqwest::StatusCode::BAD_GATEWAY, "<html>");
        assert!(matches!(error, EtcdError::Unexpected { .. }), "{error:?}");
    }
}
