//! The audit trail: the token's subject on the job, its events and the ledger records an
//! operation makes, with the caller's reason; and no actor at all without access control.

use scheduler::{domain::EventKind, grpc::pb};
use serde_json::{Value, json};

use crate::{
    access::{grpc_request, secured},
    support::{TestApp, id_of, sms_job, tokens::token},
};

#[tokio::test]
async fn the_subject_is_recorded_on_the_job_its_events_and_its_ledger() {
    let (mut app, _dir) = secured().await;
    let (admin, operator) = (token("ana", "admin"), token("olga", "operator"));
    let response = app
        .http
        .post(app.url("/api/v1/jobs"))
        .header("authorization", &admin)
        .json(&sms_job(
            "audited",
            json!({"intervalSeconds": 3600}),
            json!({}),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let job: Value = response.json().await.unwrap();
    let id = id_of(&job);
    assert_eq!(
        (&job["createdBy"], &job["updatedBy"]),
        (&json!("ana"), &json!("ana"))
    );
    let created = app.next_event(EventKind::Created, &id).await;
    assert_eq!(created.actor.as_deref(), Some("ana"));

    let (http, base) = (app.http.clone(), app.url(""));
    let post = |path: String, body: Option<Value>| {
        let request = http
            .post(format!("{base}{path}"))
            .header("authorization", format!("Bearer {operator}"));
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let (status, paused) = post(
        format!("/api/v1/jobs/{id}/pause"),
        Some(json!({"reason": "disk full"})),
    )
    .await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["updatedBy"], "olga");
    assert_eq!(paused["createdBy"], "ana");
    let event = app.next_event(EventKind::Paused, &id).await;
    assert_eq!(
        (event.actor.as_deref(), event.reason.as_deref()),
        (Some("olga"), Some("disk full"))
    );

    let (status, _) = post(format!("/api/v1/jobs/{id}/trigger"), None).await;
    assert_eq!(status, 200);
    let (status, _) = post(
        format!("/api/v1/jobs/{id}/cancel"),
        Some(json!({"reason": "retired"})),
    )
    .await;
    assert_eq!(status, 200);
    let runs: Value = app
        .http
        .get(app.url(&format!("/api/v1/jobs/{id}/runs")))
        .header("authorization", &operator)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cancelled = runs["runs"]
        .as_array()
        .expect("a page of runs")
        .iter()
        .find(|r| r["status"] == "CANCELLED")
        .expect("the triggered run was cancelled");
    assert_eq!(
        (&cancelled["actor"], &cancelled["reason"]),
        (&json!("olga"), &json!("retired"))
    );

    let mut client = app.grpc().await;
    let read = client
        .get_job(grpc_request(
            pb::GetJobRequest { id: id.clone() },
            Some(&operator),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (read.created_by.as_str(), read.updated_by.as_str()),
        ("ana", "olga")
    );

    let (status, body) = post(
        format!("/api/v1/jobs/{id}/resume"),
        Some(json!({"reason": "x".repeat(501)})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["field"], "reason");
}

#[tokio::test]
async fn without_auth_every_call_is_open_and_no_actor_is_made_up() {
    let mut app = TestApp::spawn().await;
    let job = app
        .create_job(&sms_job(
            "open",
            json!({"intervalSeconds": 3600}),
            json!({}),
        ))
        .await;
    let id = id_of(&job);
    assert!(
        job.get("createdBy").is_none() && job.get("updatedBy").is_none(),
        "{job}"
    );
    let (status, _) = app
        .post_json(&format!("/api/v1/jobs/{id}/trigger"), &json!({}))
        .await;
    assert_eq!(status, 200);
    let run = app.next_event(EventKind::Run, &id).await;
    assert_eq!(
        (run.actor.clone(), run.run.as_ref().unwrap().actor.clone()),
        (None, None)
    );
    let runs = app.runs(&id).await;
    assert!(runs[0].get("actor").is_none(), "{runs:?}");
}
