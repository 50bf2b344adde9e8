//! Memory bounded per client, by bytes: the scenarios of the hardening probe against the real
//! binary on its embedded store. An event-stream client that never reads while jobs with
//! 64 KiB of `jobData` (an array of zeros, which takes many times its size once parsed) are
//! created; those jobs all falling due at one instant; ten concurrent pages of 100 of them.
//! The process's peak anonymous memory (its heap and stacks) stays under 100 MiB, the stalled
//! client is cut off with a `lagged` notice, and a page that would be too big holds what fits
//! and says so.
//!
//! The bound is on anonymous memory, sampled through the whole test, not on the whole RSS: the
//! debug binary's code pages mapped from its 300 MB file count in RSS too (about 35 MiB here),
//! and how many of them a machine maps around each page fault is the kernel's business, not
//! the workload's. The whole peak RSS is printed beside it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::Utc;
use futures::future::join_all;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Service, eventually, sms_job};

/// Jobs created: 600 × 64 KiB is about 38 MiB of JSON, and was about 600 MiB of parsed events
/// held for the one stalled client.
const JOBS: usize = 600;

/// A field of the process's `/proc/<pid>/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The highest `RssAnon` of process `pid`, sampled every 5 ms on a thread of its own until the
/// sampler is dropped.
struct AnonPeak {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl AnonPeak {
    fn sample(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(status_kib(pid, "RssAnon")));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                seen.fetch_max(status_kib(pid, "RssAnon"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Self { peak, stop }
    }

    /// The highest seen so far, in KiB.
    fn kib(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for AnonPeak {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `{"Zeros": [0, 0, ...]}` of just under 64 KiB.
fn zeros() -> Value {
    json!({"Zeros": vec![0; 32_000]})
}

#[tokio::test]
async fn a_stalled_stream_reader_and_big_jobs_keep_the_process_under_100_mib() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path()).await;
    let pid = service.child.id();
    let anon = AnonPeak::sample(pid);
    let http = reqwest::Client::new();

    // An event-stream client with a small receive buffer that never reads.
    let address = service.url("").trim_start_matches("http://").to_owned();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(address.parse().unwrap()).await.unwrap();
    stalled
        .write_all(b"GET /api/v1/events HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();

    // Jobs of 64 KiB all due at one instant, created 8 at a time.
    let due_at = Utc::now() + chrono::Duration::seconds(30);
    let due = due_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let create = |n: usize| {
        let body = sms_job(
            &format!("big {n}"),
            json!({"runAt": due}),
            json!({"jobData": zeros()}),
        );
        let request = http.post(service.url("/api/v1/jobs")).json(&body).send();
        async move { request.await.unwrap().status() }
    };
    for chunk in (0..JOBS).collect::<Vec<_>>().chunks(8) {
        let statuses = join_all(chunk.iter().map(|&n| create(n))).await;
        assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    }
    let after_creates = status_kib(pid, "RssAnon");

    // They all fall due together; wait until every one has fired.
    if let Ok(wait) = (due_at - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
    eventually("every big job to fire", || {
        let request = http
            .get(service.url("/api/v1/jobs?status=RUNNING&size=1"))
            .send();
        async move {
            let page: Value = request.await.ok()?.json().await.ok()?;
            (page["totalCount"] == JOBS).then_some(())
        }
    })
    .await;
    let after_fires = status_kib(pid, "RssAnon");

    // Ten concurrent pages of 100: each holds what fits in its byte bound, and says so.
    let pages = join_all((1..=10).map(|page| {
        let request = http
            .get(service.url(&format!("/api/v1/jobs?size=100&page={}", page % 6 + 1)))
            .send();
        async move { request.await.unwrap().json::<Value>().await.unwrap() }
    }))
    .await;
    for page in &pages {
        let held = page["jobs"].as_array().unwrap().len();
        assert!(
            held > 0 && held < 100,
            "a page of 100 big jobs is cut: {held}"
        );
        assert_eq!(page["truncated"], true);
        assert_eq!(page["size"], 100);
    }
    let peak = anon.kib();
    println!(
        "anonymous memory after {JOBS} creates: {} MiB; after their fires: {} MiB; peak with \
         ten pages: {} MiB (whole RSS peak {} MiB, {} MiB of it mapped from files now)",
        after_creates / 1024,
        after_fires / 1024,
        peak / 1024,
        status_kib(pid, "VmHWM") / 1024,
        status_kib(pid, "RssFile") / 1024,
    );
    assert!(
        peak < 100 * 1024,
        "peak anonymous memory {} MiB",
        peak / 1024
    );

    // The stalled client was cut off: once it reads, it finds the notice and the stream's end.
    let mut received = Vec::new();
    let read_all = async {
        let mut buffer = vec![0; 64 * 1024];
        loop {
            let n = stalled.read(&mut buffer).await.unwrap();
            received.extend_from_slice(&buffer[..n]);
            if n == 0 || received.ends_with(b"\r\n0\r\n\r\n") {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read_all)
        .await
        .expect("the cut-off stream ends");
    let text = String::from_utf8_lossy(&received);
    assert!(text.contains("event: lagged"), "no lagged notice");
    assert!(
        text.contains("event: scheduler.job.created"),
        "it was sent events before it fell behind"
    );
}
