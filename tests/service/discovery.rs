//! Registration in a real etcd, as go-kit's `sd/etcdv3` reads it: each replica's key is the
//! prefix followed by its address, its value the address, on a lease the replica keeps alive;
//! the key goes at once on a graceful shutdown and within the lease's time to live when the
//! process is killed; a key or lease pulled from under the replica is put back; and an etcd
//! that is down at start neither stops the service from serving nor from registering later.
//! Each test has a key prefix of its own.

use std::time::{Duration, Instant};

use clap::Parser;
use scheduler::config::Config;
use serde_json::json;

use crate::support::{
    Service, TestApp,
    etcd::{EtcdClient, PrivateEtcd, endpoints, test_prefix},
    eventually, free_port, sms_job,
};

/// The flags that register a replica in the etcd at `endpoints` under `prefix`.
fn etcd_flags(endpoints: &str, prefix: &str, ttl_seconds: u64) -> Vec<String> {
    [
        "--etcd-endpoints",
        endpoints,
        "--etcd-prefix",
        prefix,
        "--etcd-ttl-seconds",
        &ttl_seconds.to_string(),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// An in-process service on a free loopback port and the memory store, registering as
/// `etcd_flags` says.
fn config(endpoints: &str, prefix: &str, ttl_seconds: u64) -> Config {
    let mut args: Vec<String> = [
        "scheduler",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--store",
        "memory",
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(etcd_flags(endpoints, prefix, ttl_seconds));
    Config::parse_from(args)
}

/// The address a child process on loopback registers: `127.0.0.1:port`.
fn address_of(service: &Service) -> String {
    service.url("").trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn a_replica_registers_its_address_under_the_prefix_on_a_lease_it_keeps_alive() {
    let (etcd, prefix) = (EtcdClient::shared(), test_prefix());
    let app = TestApp::spawn_with(config(&endpoints(), &prefix, 2)).await;
    let address = app.addr.to_string();
    let key = format!("{prefix}{address}");

    let entry = etcd.registered(&key).await;
    assert_eq!(entry.value, address, "the value is the instance string");
    assert_ne!(entry.lease, 0, "the key is on a lease");
    let (_, granted) = etcd
        .time_to_live(entry.lease)
        .await
        .expect("the lease lives");
    assert_eq!(granted, 2, "the lease has the configured time to live");
    let listed: Vec<String> = etcd
        .under(&prefix)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        listed,
        [key.as_str()],
        "one key per replica under the prefix"
    );

    // Past twice its time to live, the same lease still holds the key: it is renewed.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(etcd.get(&key).await, Some(entry.clone()));
    assert!(etcd.time_to_live(entry.lease).await.is_some());
    app.stop().await;
}

#[tokio::test]
async fn sigterm_removes_the_key_at_once_not_when_the_lease_expires() {
    let (etcd, prefix) = (EtcdClient::shared(), test_prefix());
    let dir = tempfile::tempdir().unwrap();
    let mut service = Service::start_with(dir.path(), &etcd_flags(&endpoints(), &prefix, 60)).await;
    let key = format!("{prefix}{}", address_of(&service));
    let entry = etcd.registered(&key).await;

    let status = std::process::Command::new("kill")
        .args(["-TERM", &service.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exited = eventually("the process to exit after SIGTERM", || {
        let exited = service.child.try_wait().unwrap();
        async move { exited }
    })
    .await;
    assert!(exited.success(), "{exited:?}");

    assert_eq!(
        etcd.get(&key).await,
        None,
        "the key is gone once the process has exited"
    );
    assert_eq!(
        etcd.time_to_live(entry.lease).await,
        None,
        "the lease was revoked, not left to run out its 60 s"
    );
}

#[tokio::test]
async fn a_killed_replica_disappears_within_its_leases_time_to_live() {
    let (etcd, prefix) = (EtcdClient::shared(), test_prefix());
    let dir = tempfile::tempdir().unwrap();
    let mut service = Service::start_with(dir.path(), &etcd_flags(&endpoints(), &prefix, 2)).await;
    let key = format!("{prefix}{}", address_of(&service));
    etcd.registered(&key).await;

    service.child.kill().unwrap();
    service.child.wait().unwrap();
    let killed = Instant::now();
    assert!(
        etcd.get(&key).await.is_some(),
        "SIGKILL leaves the key to its lease"
    );
    eventually("the killed replica's key to expire", || async {
        etcd.get(&key).await.is_none().then_some(())
    })
    .await;
    // A 2 s lease, renewed until the kill: gone within its time to live, give or take the
    // expiry sweep.
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "the key outlived its lease by far: {:?}",
        killed.elapsed()
    );
}

#[tokio::test]
async fn a_key_deleted_or_a_lease_revoked_from_under_the_replica_is_registered_again() {
    let (etcd, prefix) = (EtcdClient::shared(), test_prefix());
    let app = TestApp::spawn_with(config(&endpoints(), &prefix, 3)).await;
    let address = app.addr.to_string();
    let key = format!("{prefix}{address}");
    let first = etcd.registered(&key).await;

    assert!(etcd.delete(&key).await, "the key was there to delete");
    let put_back = etcd.registered(&key).await;
    assert_eq!(
        put_back, first,
        "the key is put back on the lease, which still lives"
    );

    etcd.revoke(first.lease).await;
    let again = eventually("the replica to register on a new lease", || async {
        etcd.get(&key)
            .await
            .filter(|entry| entry.lease != first.lease)
    })
    .await;
    assert_eq!(again.value, address);
    assert!(etcd.time_to_live(again.lease).await.is_some());
    app.stop().await;
    assert_eq!(etcd.get(&key).await, None, "a graceful stop deregisters");
}

#[tokio::test]
async fn with_etcd_down_the_replica_serves_and_registers_once_etcd_is_up() {
    // Checked first, so a run without the test script fails here rather than later.
    endpoints();
    let port = free_port();
    let prefix = test_prefix();
    let app = TestApp::spawn_with(config(&format!("http://127.0.0.1:{port}"), &prefix, 2)).await;

    for path in ["/healthz", "/readyz"] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path} does not depend on etcd");
    }
    app.create_job(&sms_job(
        "while etcd is down",
        json!({"intervalSeconds": 3600}),
        json!({}),
    ))
    .await;

    let _etcd = PrivateEtcd::start(port).await;
    let client = EtcdClient::of(&format!("http://127.0.0.1:{port}"));
    let key = format!("{prefix}{}", app.addr);
    let entry = client.registered(&key).await;
    assert_eq!(entry.value, app.addr.to_string());
    app.stop().await;
    assert_eq!(client.get(&key).await, None, "a graceful stop deregisters");
}
