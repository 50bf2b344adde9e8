//! Several scheduler processes on one store: every expected run fires exactly once, even when
//! one process is killed with SIGKILL in the middle of firing; and every process's event
//! stream carries every process's events, once each and in one order, to a client that stays
//! and to one that disconnects while jobs fire and resumes on another process.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{Value, json};

use crate::support::{Service, database_name, eventually, in_millis};

const JOBS: usize = 300;
const REPLICAS: usize = 3;

/// What one SSE client saw: each event's place in the journal and, for run events, the run.
type Seen = Arc<Mutex<Vec<(u64, Option<String>)>>>;

/// Reads the event stream at `base` (after `since`, when given) into `seen`, until it ends or
/// `stop_after` events were read.
fn follow(
    base: String,
    since: Option<u64>,
    seen: Seen,
    stop_after: Option<usize>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut request = reqwest::Client::new().get(format!("{base}/api/v1/events"));
        if let Some(since) = since {
            request = request.header("last-event-id", since.to_string());
        }
        let Ok(mut response) = request.send().await else {
            return;
        };
        let mut buffer = String::new();
        let mut read = 0;
        while let Ok(Some(chunk)) = response.chunk().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let message: String = buffer.drain(..end + 2).collect();
                let mut seq = None;
                let mut run = None;
                for line in message.lines() {
                    if let Some(id) = line.strip_prefix("id:") {
                        seq = id.trim().parse::<u64>().ok();
                    }
                    let Some(data) = line.strip_prefix("data:") else {
                        continue;
                    };
                    let Ok(event) = serde_json::from_str::<Value>(data.trim()) else {
                        continue;
                    };
                    if event["type"] == "scheduler.job.run" {
                        run = event["run"]["runId"].as_str().map(str::to_owned);
                    }
                }
                if let Some(seq) = seq {
                    seen.lock().unwrap().push((seq, run));
                    read += 1;
                    if stop_after == Some(read) {
                        return;
                    }
                }
            }
        }
    })
}

/// The runs a client saw, checking that it saw every event once and in the journal's order.
fn runs_seen(client: &str, seen: &Seen) -> Vec<String> {
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "{client}: events out of order or repeated"
    );
    seen.into_iter().filter_map(|(_, run)| run).collect()
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
    // A client on each replica, following from the start; and one that leaves early.
    let streams: Vec<Seen> = (0..REPLICAS).map(|_| Seen::default()).collect();
    let followers: Vec<_> = replicas
        .iter()
        .zip(&streams)
        .map(|(r, seen)| follow(r.url(""), Some(0), seen.clone(), None))
        .collect();
    let resuming = Seen::default();
    let first_part = follow(
        replicas[0].url(""),
        Some(0),
        resuming.clone(),
        Some(JOBS + 50),
    );
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
    // The leaving client left after its share, while jobs fired (the first runs fire half a
    // second into the window); it comes back, on another replica, from its last event.
    tokio::time::timeout(Duration::from_secs(30), first_part)
        .await
        .expect("the leaving client read its share")
        .unwrap();
    let left_at = resuming.lock().unwrap().last().map(|(seq, _)| *seq);
    let second_part = follow(replicas[1].url(""), left_at, resuming.clone(), None);

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
        let page: Value = survivor.get_json(&format!("/api/v1/jobs/{id}/runs")).await;
        assert_eq!(
            page["totalCount"], 1,
            "job {id} has exactly one run: {page}"
        );
        stored.insert(page["runs"][0]["runId"].as_str().unwrap().to_owned());
    }
    assert_eq!(stored.len(), JOBS);

    // Every run fired once: no client, following any replica, saw a run twice; those on the
    // surviving replicas saw every run, the one that came back too.
    eventually("every surviving client to have seen every run", || async {
        let complete = [&streams[0], &streams[2], &resuming].iter().all(|seen| {
            seen.lock()
                .unwrap()
                .iter()
                .filter(|(_, run)| run.is_some())
                .count()
                >= JOBS
        });
        complete.then_some(())
    })
    .await;
    for (client, seen) in [
        ("replica 1's client", &streams[0]),
        ("replica 3's client", &streams[2]),
        ("the client that left and came back", &resuming),
    ] {
        let runs = runs_seen(client, seen);
        let unique: HashSet<_> = runs.iter().cloned().collect();
        assert_eq!(runs.len(), unique.len(), "{client}: a run seen twice");
        assert_eq!(
            unique, stored,
            "{client}: the runs seen are the stored ones"
        );
    }
    let killed = runs_seen("the killed replica's client", &streams[1]);
    let mut per_run: HashMap<&str, usize> = HashMap::new();
    for run in &killed {
        *per_run.entry(run.as_str()).or_default() += 1;
    }
    assert!(per_run.values().all(|n| *n == 1), "a run seen twice");
    assert!(
        killed.iter().all(|run| stored.contains(run)),
        "every run seen is the stored one"
    );
    println!(
        "the killed replica's client saw {} runs before it went; the client that left did at place {left_at:?}",
        killed.len()
    );
    for follower in followers {
        follower.abort();
    }
    second_part.abort();
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
