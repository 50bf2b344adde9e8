//! REST edge cases a hostile or careless client reaches: a change that changes nothing, `If-Match`
//! lists, a huge body announced with `Expect: 100-continue`, integers past 2^53 in job data, a
//! request target too long, and the malformed requests hyper refuses before any handler.

use scheduler::domain::EventKind;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Failures, TestApp, id_of, sms_job};

#[tokio::test]
async fn a_patch_that_changes_nothing_stores_nothing_and_tells_no_one() {
    let mut app = TestApp::spawn().await;
    let job = app
        .create_job(&sms_job(
            "still",
            json!({"intervalSeconds": 3600}),
            json!({}),
        ))
        .await;
    let id = id_of(&job);
    app.published().await;
    for patch in [
        json!({}),
        json!({"name": "still"}),
        json!({"jobData": {"To": "+100"}}),
    ] {
        let response = app.patch(&format!("/api/v1/jobs/{id}"), &patch).await;
        assert_eq!(response.status(), 200, "{patch}");
        assert_eq!(response.headers()["etag"], "\"1\"", "{patch}");
    }
    assert_eq!(app.get_job(&id).await["version"], 1);
    let published = app.published().await;
    assert!(
        published.iter().all(|e| e.kind != EventKind::Updated),
        "{published:?}"
    );
}

#[tokio::test]
async fn if_match_takes_a_list_of_versions_and_never_matches_a_weak_one() {
    let app = TestApp::spawn().await;
    let job = app
        .create_job(&sms_job(
            "listed",
            json!({"intervalSeconds": 3600}),
            json!({}),
        ))
        .await;
    let id = id_of(&job);
    let mut failures = Failures::new();
    let mut name = 0;
    for (if_match, expected) in [
        (r#""7", "8""#, 412),
        (r#"W/"1""#, 412),
        (r#""0", "1""#, 200),
        (r#"W/"2", "2""#, 200),
        (r#""2", nope"#, 400),
        ("*", 200),
    ] {
        name += 1;
        let response = app
            .http
            .patch(app.url(&format!("/api/v1/jobs/{id}")))
            .header("if-match", if_match)
            .json(&json!({"name": format!("listed {name}")}))
            .send()
            .await
            .unwrap();
        failures.expect_eq(if_match, response.status().as_u16(), expected);
    }
    failures.assert_none("If-Match lists");
    assert_eq!(app.get_job(&id).await["version"], 4);
}

#[tokio::test]
async fn a_body_announced_too_large_is_refused_before_the_client_sends_it() {
    let app = TestApp::spawn().await;
    let mut tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/jobs HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: 104857600\r\nexpect: 100-continue\r\n\r\n",
        app.addr
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0; 4096];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), tcp.read(&mut answer))
        .await
        .expect("an answer without the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert_eq!(app.job_count().await, 0);
}

#[tokio::test]
async fn integers_in_job_data_are_kept_exactly_to_64_bits() {
    let app = TestApp::spawn().await;
    let body = sms_job("exact", json!({"intervalSeconds": 3600}), json!({}))
        .to_string()
        .replace(
            r#""jobData":{"To":"+100"}"#,
            r#""jobData":{"To":"+100","Largest":9223372036854775807,"Smallest":-9223372036854775808,"Unsigned":[9007199254740993]}"#,
        );
    let response = app
        .http
        .post(app.url("/api/v1/jobs"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let id = id_of(&response.json().await.unwrap());
    let text = app
        .http
        .get(app.url(&format!("/api/v1/jobs/{id}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for exact in [
        r#""Largest":9223372036854775807"#,
        r#""Smallest":-9223372036854775808"#,
        // 2^53 + 1: past what a double holds exactly.
        r#""Unsigned":[9007199254740993]"#,
    ] {
        assert!(text.contains(exact), "{exact} not in {text}");
    }
}

#[tokio::test]
async fn a_request_target_too_long_is_414_with_a_problem_and_a_long_but_fine_one_answers() {
    let app = TestApp::spawn().await;
    let fine = app
        .http
        .get(app.url(&format!("/healthz?padding={}", "n".repeat(7 * 1024))))
        .send()
        .await
        .unwrap();
    assert_eq!(fine.status(), 200);
    let long = app
        .http
        .get(app.url(&format!("/api/v1/jobs?name={}", "n".repeat(9 * 1024))))
        .send()
        .await
        .unwrap();
    assert_eq!(long.status(), 414);
    assert_eq!(long.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = long.json().await.unwrap();
    assert_eq!(problem["status"], 414);
    assert!(
        problem["detail"].as_str().unwrap().contains("8192 bytes"),
        "{problem}"
    );
}

#[tokio::test]
async fn requests_hyper_refuses_itself_get_a_problem_document_and_store_nothing() {
    let app = TestApp::spawn().await;
    let many_headers: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let cases = [
        (
            "a duplicate Content-Length",
            "POST /api/v1/jobs HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             content-length: 2\r\ncontent-length: 3\r\n\r\n{}"
                .to_owned(),
            400,
        ),
        (
            "an unreadable Content-Length",
            "POST /api/v1/jobs HTTP/1.1\r\nhost: x\r\ncontent-length: two\r\n\r\n{}".to_owned(),
            400,
        ),
        ("not HTTP at all", "garbage\r\n\r\n".to_owned(), 400),
        (
            "a target over 64 KiB",
            format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(70_000)),
            414,
        ),
        (
            "150 headers",
            format!("GET /healthz HTTP/1.1\r\nhost: x\r\n{many_headers}\r\n"),
            431,
        ),
    ];
    for (case, request, status) in cases {
        let mut tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        // hyper may answer and close before it has read all of a big request.
        let _ = tcp.write_all(request.as_bytes()).await;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tcp.read_to_end(&mut answer),
        )
        .await
        .unwrap_or_else(|_| panic!("{case}: no answer"));
        assert!(read.is_ok() || !answer.is_empty(), "{case}: {read:?}");
        let answer = String::from_utf8_lossy(&answer);
        let (head, body) = answer
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("{case}: {answer}"));
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{case}: {head}"
        );
        let head = head.to_ascii_lowercase();
        assert!(
            head.contains("\r\ncontent-type: application/problem+json\r\n"),
            "{case}: {head}"
        );
        assert!(
            head.contains(&format!("\r\ncontent-length: {}\r\n", body.len()))
                || head.ends_with(&format!("\r\ncontent-length: {}", body.len())),
            "{case}: {head}"
        );
        let problem: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{case}: {e}: {body}"));
        assert_eq!(problem["status"], status, "{case}");
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{case}"
        );
    }
    assert_eq!(app.job_count().await, 0);
    // The service goes on answering.
    let fine = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(fine.status(), 200);
}
