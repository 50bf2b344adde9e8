//! The README's quick start, run as pasted against the real binary: every command, and every
//! answer its comments give.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use crate::support::Service;

/// The shell block after the `<!-- quickstart -->` marker.
fn quick_start() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let after = readme
        .split_once("<!-- quickstart -->")
        .expect("the README marks its quick start")
        .1;
    let block = after
        .trim_start()
        .strip_prefix("```sh\n")
        .expect("a sh block follows the marker");
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

#[tokio::test]
async fn the_quick_start_runs_top_to_bottom_and_answers_what_it_says() {
    for tool in ["curl", "jq"] {
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
    let data = tempfile::tempdir().unwrap();
    let service = Service::start(data.path()).await;
    let base = service.url("");
    let block = quick_start();
    let promised = promised(&block);
    assert!(promised.len() >= 10, "{promised:?}");

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

    let script = block.replacen(
        "BASE=localhost:8080",
        &format!("BASE={}", base.trim_start_matches("http://")),
        1,
    );
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .output(),
    )
    .await
    .expect("the quick start finishes within a minute")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the quick start failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answers: Vec<&str> = stdout.lines().map(str::trim).collect();
    assert_eq!(answers, promised, "what the comments say against what came");

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
