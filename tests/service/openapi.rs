//! The committed `openapi/openapi.json` is the generated document.
//!
//! After an API change, regenerate it with `UPDATE_OPENAPI=1 cargo test openapi`.

use scheduler::rest::ApiDoc;
use utoipa::OpenApi;

#[test]
fn committed_openapi_document_matches_the_generated_one() {
    let generated = ApiDoc::openapi().to_pretty_json().unwrap() + "\n";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(path).expect("openapi/openapi.json exists");
    assert!(
        committed == generated,
        "openapi/openapi.json is stale: run `UPDATE_OPENAPI=1 cargo test openapi` and commit it"
    );
}

#[tokio::test]
async fn swagger_uis_examples_are_requests_the_service_takes_and_answers_it_gives() {
    use serde_json::Value;
    let app = crate::support::TestApp::spawn().await;
    let document = app.get_json("/api-docs/openapi.json").await;
    let create = &document["paths"]["/api/v1/jobs"]["post"];
    let examples = create["requestBody"]["content"]["application/json"]["examples"]
        .as_object()
        .expect("named examples of a new job");
    // One per schedule shape, each taken as it is.
    let mut shapes = Vec::new();
    for (name, example) in examples {
        let response = app.post_job(&example["value"]).await;
        assert_eq!(response.status(), 201, "the {name} example is refused");
        let job: Value = response.json().await.unwrap();
        shapes.extend(
            ["runAt", "cron", "intervalSeconds"]
                .into_iter()
                .filter(|shape| job["schedule"].get(shape).is_some_and(|v| !v.is_null())),
        );
    }
    shapes.sort_unstable();
    assert_eq!(shapes, ["cron", "intervalSeconds", "runAt"]);

    // Every problem response has an example of its own status.
    let mut problems = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let Some(responses) = operation["responses"].as_object() else {
                continue;
            };
            for (code, response) in responses {
                let Some(content) = response["content"].get("application/problem+json") else {
                    continue;
                };
                let example = &content["example"];
                assert_eq!(
                    example["status"].to_string(),
                    *code,
                    "{method} {path} {code}: {example}"
                );
                assert!(example["detail"].is_string(), "{method} {path} {code}");
                problems += 1;
            }
        }
    }
    assert!(problems > 50, "{problems}");

    // The examples are the answers: a bad id, a missing job, a bad body.
    let get = &document["paths"]["/api/v1/jobs/{id}"]["get"]["responses"];
    let example = |responses: &Value, code: &str| {
        responses[code]["content"]["application/problem+json"]["example"].clone()
    };
    assert_eq!(
        app.get_json("/api/v1/jobs/not-an-id").await,
        example(get, "400")
    );
    assert_eq!(
        app.get_json("/api/v1/jobs/65f1c0ffee0123456789abcd").await,
        example(get, "404")
    );
    let list = &document["paths"]["/api/v1/jobs"]["get"]["responses"];
    assert_eq!(
        app.get_json("/api/v1/jobs?status=ASLEEP").await,
        example(list, "400")
    );
    let preview = &document["paths"]["/api/v1/schedule/preview"]["get"]["responses"];
    assert_eq!(
        app.get_json("/api/v1/schedule/preview?cron=0%209%20*%20*%20FUNDAY")
            .await,
        example(preview, "400")
    );
    let events = &document["paths"]["/api/v1/events"]["get"]["responses"];
    assert_eq!(
        app.get_json("/api/v1/events?jobId=not-an-id").await,
        example(events, "400")
    );
    // The 409s of the operations are the domain's refusals.
    let job: Value = app
        .post_job(&examples["cron"]["value"])
        .await
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap();
    for (operation, before) in [("resume", None), ("pause", Some("pause"))] {
        if let Some(first) = before {
            let (status, _) = app
                .post_json(&format!("/api/v1/jobs/{id}/{first}"), &Value::Null)
                .await;
            assert_eq!(status, 200);
        }
        let (status, answered) = app
            .post_json(&format!("/api/v1/jobs/{id}/{operation}"), &Value::Null)
            .await;
        assert_eq!(status, 409, "{operation}: {answered}");
        let path = format!("/api/v1/jobs/{{id}}/{operation}");
        let responses = &document["paths"][path.as_str()]["post"]["responses"];
        assert_eq!(answered, example(responses, "409"), "{operation}");
    }
    let mut bad = examples["cron"]["value"].clone();
    bad["name"] = "ab".into();
    bad["schedule"]["cron"] = "0 9 * * FUNDAY".into();
    let response = app.post_job(&bad).await;
    assert_eq!(response.status(), 400);
    let answered: Value = response.json().await.unwrap();
    assert_eq!(answered, example(&create["responses"], "400"));
}
