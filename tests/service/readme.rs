//! The README's examples, run as pasted against the real binary: the quick start (every command,
//! and every answer its comments give) and the executors.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use crate::support::{
    Service, email_job, eventually, id_of, in_millis,
    kafka::{TestTopics, brokers},
};

/// The shell block after the `<!-- {marker} -->` comment.
fn block(marker: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let after = readme
        .split_once(&format!("<!-- {marker} -->"))
        .unwrap_or_else(|| panic!("the README marks a block {marker}"))
        .1;
    let after = after.trim_start();
    let block = after
        .strip_prefix("```sh\n")
        .or_else(|| after.strip_prefix("```python\n"))
        .expect("a sh or python block follows the marker");
    block
        .split_once("\n```")
        .expect("the block ends")
        .0
        .to_owned()
}

/// The answers the block's comments promise, in order: a trailing `# answer` after a command.
fn promised(block: &str) -> Vec<String> {
    block
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| line.rsplit_once("  # "))
        .map(|(_, answer)| answer.trim().to_owned())
        .collect()
}

/// Runs the block `marker` against `service` as pasted (its `BASE=localhost:8080` pointed at
/// the service), and checks that it prints exactly the answers its comments promise.
async fn runs_as_it_says(service: &Service, marker: &str) {
    let block = block(marker);
    let promised = promised(&block);
    assert!(promised.len() >= 5, "{marker}: {promised:?}");
    let script = block.replacen(
        "BASE=localhost:8080",
        &format!("BASE={}", service.url("").trim_start_matches("http://")),
        1,
    );
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{marker} finishes within a minute"))
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{marker} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answers: Vec<&str> = stdout.lines().map(str::trim).collect();
    assert_eq!(
        answers, promised,
        "{marker}: what the comments say against what came"
    );
}

fn needs(tools: &[&str]) {
    for tool in tools {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(
            found.success(),
            "{tool} is needed (scripts/test.sh installs it)"
        );
    }
}

#[tokio::test]
async fn the_quick_start_runs_top_to_bottom_and_answers_what_it_says() {
    needs(&["curl", "jq"]);
    let data = tempfile::tempdir().unwrap();
    let service = Service::start(data.path()).await;

    // The second terminal: the event stream, read while the block runs.
    let events = reqwest::get(service.url("/api/v1/events")).await.unwrap();
    assert_eq!(events.status(), 200);
    let reader = tokio::spawn(async move {
        let mut kinds = Vec::new();
        let mut text = String::new();
        let mut body = events.bytes_stream();
        while let Ok(Some(Ok(chunk))) =
            tokio::time::timeout(Duration::from_secs(5), body.next()).await
        {
            text.push_str(&String::from_utf8_lossy(&chunk));
            while let Some((line, rest)) = text.split_once('\n') {
                if let Some(data) = line.strip_prefix("data:")
                    && let Ok(event) = serde_json::from_str::<Value>(data.trim())
                {
                    let kind = event["type"].as_str().unwrap_or_default();
                    kinds.push(kind.trim_start_matches("scheduler.job.").to_owned());
                }
                text = rest.to_owned();
            }
        }
        kinds
    });

    runs_as_it_says(&service, "quickstart").await;

    let kinds = reader.await.unwrap();
    assert_eq!(
        kinds,
        [
            "created", "run", "finished", "created", "updated", "paused", "resumed", "run",
            "deleted"
        ],
        "the events the README says the stream shows"
    );
    drop(service);
}

#[tokio::test]
async fn the_more_with_curl_block_answers_what_it_says() {
    needs(&["curl", "jq"]);
    let data = tempfile::tempdir().unwrap();
    let service = Service::start(data.path()).await;
    runs_as_it_says(&service, "more").await;
}

/// Runs `script` in the background, in a process group of its own, until stopped.
fn background(script: &str) -> tokio::process::Child {
    tokio::process::Command::new("bash")
        .args(["-c", script])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .process_group(0)
        .spawn()
        .unwrap()
}

/// Creates a job due in `millis` on `service` and waits until an executor has finished its run.
async fn a_job_is_done_by_the_executor(service: &Service, name: &str, millis: i64) {
    let http = reqwest::Client::new();
    let id = id_of(
        &service
            .create_job(&email_job(name, &in_millis(millis)))
            .await,
    );
    let url = service.url(&format!("/api/v1/jobs/{id}"));
    eventually("the executor to finish the run", || {
        let request = http.get(&url).send();
        async move {
            let job: Value = request.await.ok()?.json().await.ok()?;
            (job["status"] == "SUCCEEDED").then_some(())
        }
    })
    .await;
}

/// Ends `executor` (its whole process group, the pipeline's every command) and returns what it
/// printed.
async fn stop(mut executor: tokio::process::Child) -> String {
    use tokio::io::AsyncReadExt;
    if let Some(pid) = executor.id() {
        // SAFETY: a signal to the process group this test started.
        unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
    }
    let mut printed = String::new();
    if let Some(mut stdout) = executor.stdout.take() {
        let _ =
            tokio::time::timeout(Duration::from_secs(5), stdout.read_to_string(&mut printed)).await;
    }
    let _ = executor.wait().await;
    printed
}

#[tokio::test]
async fn the_pulling_worker_of_the_readme_does_a_run() {
    needs(&["curl", "jq"]);
    let data = tempfile::tempdir().unwrap();
    let service = Service::start(data.path()).await;
    let script = block("executor:pull").replace(
        "localhost:8080",
        service.url("").trim_start_matches("http://"),
    );
    let executor = background(&script);
    a_job_is_done_by_the_executor(&service, "done by a pulling worker", 0).await;
    let printed = stop(executor).await;
    assert!(
        printed.contains("sending done by a pulling worker"),
        "{printed}"
    );
}

#[tokio::test]
async fn the_webhook_receiver_of_the_readme_does_a_run() {
    needs(&["python3"]);
    let data = tempfile::tempdir().unwrap();
    let port = crate::support::free_port();
    let receiver = data.path().join("receiver.py");
    std::fs::write(
        &receiver,
        block("executor:webhook").replace("9000", &port.to_string()),
    )
    .unwrap();
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let executor = background(&format!(
        "WEBHOOK_SECRET={secret} exec python3 {}",
        receiver.display()
    ));
    let host = format!("127.0.0.1:{port}");
    eventually("the receiver to listen", || async {
        tokio::net::TcpStream::connect(&host).await.ok().map(|_| ())
    })
    .await;
    let service = Service::start_with(
        data.path(),
        &["--webhook-allowed-hosts".into(), host.clone()],
    )
    .await;
    let http = reqwest::Client::new();
    let mut body = email_job("done by a webhook", &in_millis(0));
    body["webhook"] = serde_json::json!({"url": format!("http://{host}/"), "secret": secret});
    let id = id_of(&service.create_job(&body).await);
    let url = service.url(&format!("/api/v1/jobs/{id}"));
    eventually("the receiver to finish the run", || {
        let request = http.get(&url).send();
        async move {
            let job: Value = request.await.ok()?.json().await.ok()?;
            (job["status"] == "SUCCEEDED").then_some(())
        }
    })
    .await;
    // A call it cannot verify is refused: the receiver checks the signature.
    let forged = http
        .post(format!("http://{host}/"))
        .header("webhook-id", "x")
        .header("webhook-timestamp", "1")
        .header("webhook-signature", "v1,AAAA")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let printed = stop(executor).await;
    assert!(printed.contains("sending done by a webhook"), "{printed}");
}

#[tokio::test]
async fn the_event_follower_of_the_readme_resumes_after_its_last_event() {
    needs(&["curl", "jq"]);
    let data = tempfile::tempdir().unwrap();
    let service = Service::start(data.path()).await;
    let work = tempfile::tempdir().unwrap();
    let script = format!(
        "cd {} && {}",
        work.path().display(),
        block("executor:stream").replace(
            "localhost:8080",
            service.url("").trim_start_matches("http://"),
        )
    );
    let far = || in_millis(3_600_000);
    let follower = background(&script);
    let first = service.create_job(&email_job("seen live", &far())).await;
    let last = work.path().join("last-event-id");
    eventually("the follower to see the first event", || {
        let text = std::fs::read_to_string(&last).unwrap_or_default();
        async move { (text.trim() == "1").then_some(()) }
    })
    .await;
    let printed = stop(follower).await;
    assert!(
        printed.contains("scheduler.job.created seen live"),
        "{printed}"
    );
    // While it is away, another job and a change of the first.
    service
        .create_job(&email_job("made while away", &far()))
        .await;
    let http = reqwest::Client::new();
    let paused = http
        .post(service.url(&format!("/api/v1/jobs/{}/pause", id_of(&first))))
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), 200);
    let follower = background(&script);
    eventually("the follower to catch up", || {
        let text = std::fs::read_to_string(&last).unwrap_or_default();
        async move { (text.trim() == "3").then_some(()) }
    })
    .await;
    let printed = stop(follower).await;
    assert_eq!(
        printed.lines().collect::<Vec<_>>(),
        [
            "scheduler.job.created made while away",
            "scheduler.job.paused seen live"
        ],
        "the missed events, in order, and nothing it had seen"
    );
}

#[tokio::test]
async fn the_kafka_executor_of_the_readme_does_a_run() {
    let brokers = brokers();
    let topics = TestTopics::new();
    topics.ensure(&brokers).await;
    let data = tempfile::tempdir().unwrap();
    let service = Service::start_with(data.path(), &topics.flags(&brokers)).await;
    let group = format!("readme-{}", uuid::Uuid::new_v4().simple());
    let script = block("executor:kafka")
        .replace("localhost:9092", &brokers)
        .replace("topic-job-run-result", &topics.result())
        .replace("topic-job-run ", &format!("{} ", topics.run()))
        .replace("my-executor", &group);
    assert!(script.contains(&topics.run()) && script.contains(&topics.result()));
    let executor = background(&script);
    a_job_is_done_by_the_executor(&service, "done from kafka", 0).await;
    let printed = stop(executor).await;
    assert!(printed.contains("sending done from kafka"), "{printed}");
}
