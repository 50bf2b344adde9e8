//! Benchmark of what schedules cost in CPU: a preview of the every-second cron written out in
//! full (`0-59 0-59 0-23 1-31 1-12 0-6`, 100 fires), previews of crons that match rarely or
//! never, the next fire of a per-second cron around a DST change, resuming a per-second cron
//! job after three minutes and after a day paused (through the domain, `Limits::default()`),
//! and the CPU this process spends while an in-process service on the embedded store holds
//! 1,000 per-second cron jobs and nobody calls it, once with overlap `ALLOW` (they fire every
//! second) and once with the default `SKIP` (each second's fire is recorded skipped while the
//! first run stays open), then `SKIP` again with a ledger of 8 records so that trimming it
//! happens inside the window: that figure is the engine's whole cost per fire, with the
//! schedule's share beside it.
//!
//! Run with `cargo bench --bench schedule` (`-- --quick`: a 10 s CPU window instead of 30 s).
//! It prints figures and asserts nothing about speed.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use scheduler::{
    app::Application,
    config::{Config, StoreKind},
    domain::{CronSchedule, Job, JobInput, Limits, Preview, Schedule},
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The preview from the hardening issue: every second, each field written as a full range.
const EVERY_SECOND_IN_FULL: &str = "0-59 0-59 0-23 1-31 1-12 0-6";

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Runs `call` until at least `budget` has passed (and at least 5 times); the mean time per
/// call in microseconds.
fn per_call<T>(budget: Duration, mut call: impl FnMut() -> T) -> f64 {
    let started = Instant::now();
    let mut calls = 0u32;
    while calls < 5 || started.elapsed() < budget {
        std::hint::black_box(call());
        calls += 1;
    }
    started.elapsed().as_secs_f64() * 1e6 / f64::from(calls)
}

fn cron(expression: &str, zone: &str) -> Schedule {
    Schedule::Cron(Box::new(CronSchedule::parse(expression, zone).unwrap()))
}

fn previews() {
    let from = utc("2026-03-29T00:30:00Z");
    let budget = Duration::from_secs(2);
    for (expression, zone) in [
        (EVERY_SECOND_IN_FULL, "UTC"),
        (EVERY_SECOND_IN_FULL, "Europe/Berlin"),
        ("*/15 * * * *", "Australia/Lord_Howe"),
        // Rare: 29 February, or (cron's day rule) any Monday in February.
        ("0 0 0 29 2 1", "Europe/Berlin"),
        // Rare: 29 February only.
        ("0 0 29 2 *", "America/New_York"),
    ] {
        let schedule = cron(expression, zone);
        let us = per_call(budget, || Preview::new(schedule.clone(), from, 100));
        println!("preview `{expression}` in {zone}, count 100: {us:.1} µs per call");
    }
    let us = per_call(budget, || CronSchedule::parse("0 0 31 2 *", "UTC").is_err());
    println!("refusing `0 0 31 2 *` (never matches): {us:.1} µs per call");
    let berlin = CronSchedule::parse("* * * * * *", "Europe/Berlin").unwrap();
    let mut at = utc("2026-10-25T00:59:00Z");
    let us = per_call(budget, || {
        at = berlin.next_after(at).map_or(at, |f| f.at);
    });
    println!(
        "next fire of `* * * * * *` in Europe/Berlin (walking through the change): {us:.2} µs per call"
    );
}

fn job_input(name: &str, overlap: &str) -> Value {
    json!({
        "name": name,
        "jobType": "EMAIL",
        "jobData": {
            "SourceAddress": "reports@example.com",
            "DestinationAddress": "team@example.com",
            "Subject": "Tick",
            "Message": "Every second."
        },
        "schedule": {"cron": "* * * * * *", "timezone": "Europe/Berlin"},
        "overlapPolicy": overlap,
    })
}

fn resumes() {
    let input: JobInput = serde_json::from_value(job_input("per second", "ALLOW")).unwrap();
    let spec = input.parse().unwrap();
    let start = utc("2026-10-24T12:00:00Z");
    let paused = Job::new(spec, start).pause(start).unwrap().job;
    let limits = Limits::default();
    for (label, after) in [
        ("three minutes", chrono::Duration::minutes(3)),
        ("a day", chrono::Duration::days(1)),
    ] {
        let now = start + after;
        let us = per_call(Duration::from_secs(2), || {
            paused.resume(now, &limits, 0.5).unwrap()
        });
        let step = paused.resume(now, &limits, 0.5).unwrap();
        println!(
            "resume of a per-second cron job after {label} paused: {:.2} ms per call ({} records, next fire {:?})",
            us / 1e3,
            step.finished.len(),
            step.job.schedule_time
        );
    }
}

/// CPU seconds this process has used (user and system), from `/proc/self/stat`.
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

async fn idle_cpu(jobs: usize, overlap: &str, history: u32, window: Duration) {
    let data = tempfile::tempdir().unwrap();
    let mut config = Config::for_tests();
    config.store = Some(StoreKind::Embedded);
    config.data_dir = data.path().to_owned();
    config.run_history = history;
    let app = Application::build(config).await.unwrap();
    let addr = app.local_addr();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(app.run(shutdown.clone()));
    let http = reqwest::Client::new();
    for i in 0..jobs {
        let response = http
            .post(format!("http://{addr}/api/v1/jobs"))
            .json(&job_input(&format!("per second {i}"), overlap))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    }
    // Let the first fires and the open-run cap settle in before measuring.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (cpu, wall) = (process_cpu_seconds(), Instant::now());
    tokio::time::sleep(window).await;
    let used = process_cpu_seconds() - cpu;
    let share = used / wall.elapsed().as_secs_f64() * 100.0;
    println!(
        "{jobs} per-second cron jobs (overlap {overlap}, run history {history}, embedded store), nobody calling: {share:.1} % of a core over {} s",
        window.as_secs()
    );
    // What the schedule computation alone costs per second for as many jobs.
    let berlin = CronSchedule::parse("* * * * * *", "Europe/Berlin").unwrap();
    let now = Utc::now();
    let us = per_call(Duration::from_secs(1), || berlin.next_after(now));
    println!(
        "  of which next-fire computation: {:.3} % of a core ({us:.2} µs per fire × {jobs} fires per second)",
        us * jobs as f64 / 1e6 * 100.0
    );
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    println!(
        "schedule benchmark: {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    previews();
    resumes();
    let window = Duration::from_secs(if quick { 10 } else { 30 });
    idle_cpu(1_000, "ALLOW", 100, window).await;
    // The default: each second's fire is recorded SKIPPED while the first run stays open.
    idle_cpu(1_000, "SKIP", 100, window).await;
    // With a ledger of 8, trimmed every third record: what trimming adds, which the default
    // ledger of 100 only starts after two minutes.
    idle_cpu(1_000, "SKIP", 8, window).await;
}
