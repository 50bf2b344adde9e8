//! Soak: the release binary on its embedded store under steady mixed traffic for ten minutes,
//! with ten event-stream clients of which two never read. Every second: 20 one-shot jobs are
//! created (4 KiB of `jobData`, due a second later), the fired runs of the previous second get
//! their results, and 50 interval jobs (every second) keep firing and are answered too. The
//! service's RSS and CPU are sampled every 30 s; a flat line is the point.
//!
//! Run with `cargo bench --bench soak` (`-- --quick`: two minutes instead of ten). It prints
//! figures and asserts nothing about speed.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::{io::AsyncWriteExt, sync::mpsc};

#[allow(dead_code)] // the soak shares only the process readings
mod support;
use support::process::{Binary, cpu_ticks, status_kib};

fn job(name: &str, schedule: Value) -> Value {
    json!({
        "name": name,
        "jobType": "SMS",
        "jobData": {"To": "+100", "Body": "b".repeat(4096)},
        "schedule": schedule,
        "overlapPolicy": "ALLOW",
    })
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let length = Duration::from_secs(if quick { 120 } else { 600 });
    let dir = tempfile::tempdir().unwrap();
    let mut command = Binary::command();
    command
        .args(["--store", "embedded", "--data-dir"])
        .arg(dir.path());
    let service = Binary::start(command).await;
    let pid = service.pid;
    let base = service.base();
    let http = reqwest::Client::new();

    // Ten stream clients: eight read (one of them hands fired runs to the result sender),
    // two never read, on sockets with small receive buffers.
    let (runs, mut fired) = mpsc::unbounded_channel::<(String, String)>();
    let streamed = Arc::new(AtomicU64::new(0));
    for reader in 0..8 {
        let (http, url, runs, streamed) = (
            http.clone(),
            format!("{base}/api/v1/events"),
            runs.clone(),
            streamed.clone(),
        );
        tokio::spawn(async move {
            let mut body = http.get(url).send().await.unwrap().bytes_stream();
            let mut text = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                streamed.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                if reader != 0 {
                    continue;
                }
                text.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = text.find("\n\n") {
                    let message: String = text.drain(..end + 2).collect();
                    if !message.contains("event: scheduler.job.run\n") {
                        continue;
                    }
                    let Some(data) = message.lines().find_map(|l| l.strip_prefix("data: ")) else {
                        continue;
                    };
                    let event: Value = serde_json::from_str(data).unwrap();
                    let (job, run) = (&event["jobId"], &event["run"]["runId"]);
                    if let (Some(job), Some(run)) = (job.as_str(), run.as_str()) {
                        let _ = runs.send((job.to_owned(), run.to_owned()));
                    }
                }
            }
        });
    }
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(service.addr.parse().unwrap()).await.unwrap();
        stream
            .write_all(b"GET /api/v1/events HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        stalled.push(stream);
    }

    for i in 0..50 {
        let created = http
            .post(format!("{base}/api/v1/jobs"))
            .json(&job(
                &format!("every second {i}"),
                json!({"intervalSeconds": 1}),
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
    }

    // Results, as the executors would send them.
    let results = Arc::new(AtomicU64::new(0));
    {
        let (http, base, results) = (http.clone(), base.clone(), results.clone());
        tokio::spawn(async move {
            while let Some((job, run)) = fired.recv().await {
                let url = format!("{base}/api/v1/jobs/{job}/runs/{run}/result");
                let (http, results) = (http.clone(), results.clone());
                tokio::spawn(async move {
                    let sent = http.post(url).json(&json!({"status": "SUCCEEDED"})).send();
                    if sent.await.is_ok_and(|r| r.status().is_success()) {
                        results.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
    }

    println!(
        "soak: {} s, embedded store, release binary",
        length.as_secs()
    );
    println!(
        "| minute | RSS MiB | CPU % of a core (last 30 s) | created | results | streamed MiB |"
    );
    println!("|---|---|---|---|---|---|");
    let started = Instant::now();
    let mut created = 0u64;
    let mut sample_at = started + Duration::from_secs(30);
    let mut last_ticks = cpu_ticks(pid);
    let mut samples = Vec::new();
    let mut second = tokio::time::interval(Duration::from_secs(1));
    while started.elapsed() < length {
        second.tick().await;
        let due = chrono::Utc::now() + chrono::Duration::seconds(1);
        let due = due.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let creates = (0..20).map(|n| {
            let body = job(&format!("once {created} {n}"), json!({"runAt": due}));
            http.post(format!("{base}/api/v1/jobs")).json(&body).send()
        });
        for response in futures::future::join_all(creates).await {
            if response.is_ok_and(|r| r.status() == 201) {
                created += 1;
            }
        }
        if Instant::now() >= sample_at {
            let ticks = cpu_ticks(pid);
            let cpu = (ticks - last_ticks) as f64 / 30.0;
            last_ticks = ticks;
            let rss = status_kib(pid, "VmRSS") as f64 / 1024.0;
            samples.push((rss, cpu));
            println!(
                "| {:.1} | {rss:.1} | {cpu:.1} | {created} | {} | {:.1} |",
                started.elapsed().as_secs_f64() / 60.0,
                results.load(Ordering::Relaxed),
                streamed.load(Ordering::Relaxed) as f64 / 1048576.0
            );
            sample_at += Duration::from_secs(30);
        }
    }
    let (first, last) = (samples[1], samples[samples.len() - 1]);
    println!(
        "RSS at 1 min {:.1} MiB, at the end {:.1} MiB (ratio {:.2}); CPU {:.1} % then {:.1} % (ratio {:.2}); peak RSS {:.1} MiB",
        first.0,
        last.0,
        last.0 / first.0,
        first.1,
        last.1,
        last.1 / first.1,
        status_kib(pid, "VmHWM") as f64 / 1024.0
    );
    drop(stalled);
    drop(service);
}
