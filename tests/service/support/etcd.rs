//! etcd for the tests: the server at `ETCD_ENDPOINTS` (which `scripts/with-etcd.sh` starts), a
//! key prefix of each test's own, a plain client of etcd's JSON gateway to look at what the
//! service registered (and to pull keys and leases from under it), and private servers the
//! outage test starts late.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::{Value, json};

use super::wait::eventually;

/// The etcd every test here may use.
pub fn endpoints() -> String {
    std::env::var("ETCD_ENDPOINTS").expect(
        "ETCD_ENDPOINTS is not set: run the tests with ./scripts/test.sh (or ./scripts/with-etcd.sh), which starts etcd",
    )
}

/// A key prefix no other test uses.
pub fn test_prefix() -> String {
    format!(
        "/test/{}/services/scheduler/",
        uuid::Uuid::new_v4().simple()
    )
}

/// A key as etcd holds it: its value and the lease it is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: String,
    pub lease: i64,
}

/// A client of one etcd endpoint, speaking its v3 JSON gateway.
pub struct EtcdClient {
    http: reqwest::Client,
    endpoint: String,
}

impl EtcdClient {
    /// A client of the etcd at `ETCD_ENDPOINTS`.
    pub fn shared() -> Self {
        Self::of(endpoints().split(',').next().unwrap().trim())
    }

    pub fn of(endpoint: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
            endpoint: endpoint.trim_end_matches('/').to_owned(),
        }
    }

    async fn call(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.endpoint))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("etcd answers {path}: {e}"));
        assert!(response.status().is_success(), "{path}: {response:?}");
        response.json().await.unwrap()
    }

    /// Every key under `prefix`, with its entry.
    pub async fn under(&self, prefix: &str) -> Vec<(String, Entry)> {
        // The range [prefix, prefix with its last byte plus one) is every key that starts so.
        let mut end = prefix.as_bytes().to_vec();
        *end.last_mut().unwrap() += 1;
        let range = self
            .call(
                "/v3/kv/range",
                json!({"key": STANDARD.encode(prefix), "range_end": STANDARD.encode(end)}),
            )
            .await;
        let decode = |v: &Value| {
            String::from_utf8(STANDARD.decode(v.as_str().unwrap_or_default()).unwrap()).unwrap()
        };
        range["kvs"]
            .as_array()
            .map(|kvs| {
                kvs.iter()
                    .map(|kv| {
                        let entry = Entry {
                            value: decode(&kv["value"]),
                            lease: int64(&kv["lease"]),
                        };
                        (decode(&kv["key"]), entry)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The entry of `key`, if it exists.
    pub async fn get(&self, key: &str) -> Option<Entry> {
        self.under(key)
            .await
            .into_iter()
            .find(|(found, _)| found == key)
            .map(|(_, entry)| entry)
    }

    /// Waits until `key` exists, and returns its entry.
    pub async fn registered(&self, key: &str) -> Entry {
        eventually(&format!("{key} to be registered in etcd"), || self.get(key)).await
    }

    /// Deletes `key` (whatever its lease); whether it existed.
    pub async fn delete(&self, key: &str) -> bool {
        let answer = self
            .call("/v3/kv/deleterange", json!({"key": STANDARD.encode(key)}))
            .await;
        int64(&answer["deleted"]) == 1
    }

    /// Revokes `lease`, deleting its keys.
    pub async fn revoke(&self, lease: i64) {
        self.call("/v3/lease/revoke", json!({"ID": lease.to_string()}))
            .await;
    }

    /// The lease's remaining and granted time to live, in seconds; `None` when it is gone.
    pub async fn time_to_live(&self, lease: i64) -> Option<(i64, i64)> {
        let answer = self
            .call("/v3/lease/timetolive", json!({"ID": lease.to_string()}))
            .await;
        let (ttl, granted) = (int64(&answer["TTL"]), int64(&answer["grantedTTL"]));
        (ttl > 0).then_some((ttl, granted))
    }
}

/// A 64-bit number as the gateway writes it (a string), 0 when left out.
fn int64(value: &Value) -> i64 {
    match value {
        Value::String(text) => text.parse().unwrap(),
        Value::Number(n) => n.as_i64().unwrap(),
        _ => 0,
    }
}

/// An etcd of this test's own, on loopback ports of its choosing; killed when dropped.
pub struct PrivateEtcd {
    child: Child,
    _data: tempfile::TempDir,
}

impl PrivateEtcd {
    /// Starts etcd with its client port on `port`, and waits until it serves.
    pub async fn start(port: u16) -> Self {
        let script = PathBuf::from(std::env::var("ETCD_SERVER_SCRIPT").expect(
            "ETCD_SERVER_SCRIPT is not set: run the tests with ./scripts/test.sh (or ./scripts/with-etcd.sh)",
        ));
        let data = tempfile::tempdir().unwrap();
        let child = Command::new(script)
            .arg(data.path().join("data"))
            .arg(port.to_string())
            .arg(super::free_port().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts");
        let etcd = Self { child, _data: data };
        let http = reqwest::Client::new();
        eventually("the private etcd to serve", || {
            let request = http
                .get(format!("http://127.0.0.1:{port}/health"))
                .timeout(Duration::from_secs(1))
                .send();
            async move {
                let body = request.await.ok()?.text().await.ok()?;
                body.contains("\"true\"").then_some(())
            }
        })
        .await;
        etcd
    }
}

impl Drop for PrivateEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
