//! Several scheduler processes on one store: every expected run fires exactly once, even when
//! one process is killed with SIGKILL in the middle of firing.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{Value, json};

use crate::support::{Service, database_name, eventually, in_millis};

const JOBS: usize = 300;
const REPLICAS: usize = 3;

/// Collects the run ids of the run events one process streams over SSE.
fn collect_runs(
    base: String,
    replica: usize,
    seen: Arc<Mutex<Vec<(usize, String)>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(mut response) = reqwest::get(format!("{base}/api/v1/events")).await else {
            return;
        };
        let mut buffer = String::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let message: String = buffer.drain(..end + 2).collect();
                for line in message.lines() {
                    let Some(data) = line.strip_prefix("data:") else {
                        continue;
                    };
                    let Ok(event) = serde_json::from_str::<Value>(data.trim()) else {
                        continue;
                    };
                    if event["type"] == "scheduler.job.run" {
                        let run_id = event["run"]["runId"].as_str().unwrap_or_default();
                        seen.lock().unwrap().push((replica, run_id.to_owned()));
                    }
                }
            }
        }
    })
}

async fn every_run_fires_exactly_once_across_replicas(flags: Vec<String>) {
    let mut flags = flags;
    flags.extend(
        ["--lease-seconds", "2", "--idle-poll-ms", "100"]
            .iter()
            .map(|s| s.to_string()),
    );
    let mut replicas = Vec::new();
    for _ in 0..REPLICAS {
        replicas.push(Service::start_args(&flags).await);
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let collectors: Vec<_> = replicas
        .iter()
        .enumerate()
        .map(|(i, r)| collect_runs(r.url(""), i, seen.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await; // let the streams connect

    // Hundreds of jobs due across the same three seconds, created through every replica.
    let http = reqwest::Client::new();
    let base = 2_500;
    let creates = (0..JOBS).map(|i| {
        let http = http.clone();
        let url = replicas[i % REPLICAS].url("/api/v1/jobs");
        let due = in_millis(base + (i as i64 * 3_000) / JOBS as i64);
        async move {
            let response = http
                .post(url)
                .json(&json!({
                    "name": format!("replica job {i}"),
                    "jobType": "SMS",
                    "jobData": {"To": "+100"},
                    "schedule": {"runAt": due},
                }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201);
            response.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    });
    let ids: Vec<String> = futures::future::join_all(creates).await;

    // SIGKILL one replica in the middle of the due window.
    tokio::time::sleep(Duration::from_millis(base as u64 + 1_200)).await;
    let mut victim = replicas.remove(1);
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    let survivor = &replicas[0];

    // Everything fires: claims the dead replica held come back after its lease lapses.
    eventually("every job to have fired", || {
        let request = http
            .get(survivor.url("/api/v1/jobs?status=RUNNING&size=1"))
            .send();
        async move {
            let page: Value = request.await.ok()?.json().await.ok()?;
            (page["totalCount"] == JOBS).then_some(())
        }
    })
    .await;

    let mut stored = HashSet::new();
    for id in &ids {
        let page: Value = http
            .get(survivor.url(&format!("/api/v1/jobs/{id}/runs")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            page["totalCount"], 1,
            "job {id} has exactly one run: {page}"
        );
        stored.insert(page["runs"][0]["runId"].as_str().unwrap().to_owned());
    }
    assert_eq!(stored.len(), JOBS);

    tokio::time::sleep(Duration::from_millis(300)).await; // the last events on their way
    let seen = seen.lock().unwrap().clone();
    let mut per_run: HashMap<&str, usize> = HashMap::new();
    let mut per_replica = [0usize; REPLICAS];
    for (replica, run_id) in &seen {
        *per_run.entry(run_id.as_str()).or_default() += 1;
        per_replica[*replica] += 1;
    }
    let doubled: Vec<_> = per_run.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "runs fired twice: {doubled:?}");
    assert!(
        per_run.keys().all(|id| stored.contains(*id)),
        "every fired run is the stored one"
    );
    // The killed replica's last fires may be stored without their events reaching its
    // stream; the store's ledger above is the full count.
    println!("run events per replica (the second was killed): {per_replica:?}");
    for collector in collectors {
        collector.abort();
    }
}

#[tokio::test]
async fn three_embedded_replicas_fire_every_run_once_through_a_sigkill() {
    let data = tempfile::tempdir().unwrap();
    every_run_fires_exactly_once_across_replicas(vec![
        "--store".into(),
        "embedded".into(),
        "--data-dir".into(),
        data.path().display().to_string(),
    ])
    .await;
}

#[tokio::test]
async fn three_mongodb_replicas_fire_every_run_once_through_a_sigkill() {
    let uri = std::env::var("MONGODB_URI").expect(
        "MONGODB_URI is not set: run the suite with ./scripts/test.sh, which starts a MongoDB-wire server",
    );
    every_run_fires_exactly_once_across_replicas(vec![
        "--store".into(),
        "mongodb".into(),
        "--mongodb-uri".into(),
        uri,
        "--database-name".into(),
        database_name(),
    ])
    .await;
}
