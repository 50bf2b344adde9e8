//! What stays open with access control on (health, documents, reflection unless closed), what
//! a path nobody classified needs, and that the README's role table and every route and method
//! are the policy's.

use scheduler::{config::Config, grpc::pb};
use tokio_stream::StreamExt;

use crate::{
    access::{grpc_request, secured},
    support::{
        Failures, TestApp,
        tokens::{key_path, token},
    },
};

#[tokio::test]
async fn health_docs_and_reflection_stay_open_and_unknown_paths_are_not() {
    let (app, _dir) = secured().await;
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api-docs/openapi.json",
        "/swagger-ui/",
    ] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel().await);
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("gRPC health is open");
    assert!(
        list_services(&app, None).await.is_ok(),
        "reflection is open"
    );

    let response = app
        .http
        .get(app.url("/api/v1/secrets"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        401,
        "an unknown path needs a token first"
    );
    let response = app
        .http
        .get(app.url("/api/v1/secrets"))
        .header("authorization", token("ana", "admin"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

async fn list_services(app: &TestApp, auth: Option<&str>) -> Result<(), tonic::Status> {
    use tonic_reflection::pb::v1 as r1;
    let mut client = r1::server_reflection_client::ServerReflectionClient::new(app.channel().await);
    let request = r1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(r1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut responses = client
        .server_reflection_info(grpc_request(tokio_stream::iter([request]), auth))
        .await?
        .into_inner();
    responses.next().await.expect("a response")?;
    Ok(())
}

#[tokio::test]
async fn closed_reflection_needs_a_viewer() {
    let mut config = Config::for_tests();
    config.auth.auth_public_key_file = Some(key_path("rsa.pub"));
    config.auth.auth_close_reflection = true;
    let app = TestApp::spawn_with(config).await;
    let refused = list_services(&app, None).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let viewer = token("vic", "viewer");
    list_services(&app, Some(&viewer))
        .await
        .expect("a viewer may reflect");
}

#[test]
fn the_readme_role_table_is_the_policy() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("<!-- roles:start")
        .expect("the table's start marker");
    let end = readme
        .find("<!-- roles:end -->")
        .expect("the table's end marker");
    let rows: Vec<&str> = readme[start..end]
        .lines()
        .filter(|line| line.starts_with("| `"))
        .collect();
    let expected: Vec<String> = scheduler::auth::policy::table()
        .into_iter()
        .map(|(rest, grpc, role)| format!("| `{rest}` | `{grpc}` | {role} |"))
        .collect();
    assert_eq!(
        rows, expected,
        "README.md's role table differs from src/auth/policy.rs"
    );
}

#[test]
fn every_documented_route_and_every_grpc_method_has_its_own_row_in_the_policy() {
    use prost::Message;
    use scheduler::auth::policy::{Operation, operation};
    use utoipa::OpenApi;

    let mut failures = Failures::new();
    let document = scheduler::rest::ApiDoc::openapi();
    for (path, item) in &document.paths.paths {
        if !path.starts_with("/api/v1/") {
            continue;
        }
        let concrete = path
            .replace("{id}", "65f1c0ffee0123456789abcd")
            .replace("{runId}", "0b5f6c1e-3f4a-5d2b-9c8e-7a6b5c4d3e2f");
        let methods = [
            (axum::http::Method::GET, item.get.is_some()),
            (axum::http::Method::POST, item.post.is_some()),
            (axum::http::Method::PATCH, item.patch.is_some()),
            (axum::http::Method::DELETE, item.delete.is_some()),
            (axum::http::Method::PUT, item.put.is_some()),
        ];
        for (method, _) in methods.into_iter().filter(|(_, present)| *present) {
            let found = operation(&method, &concrete);
            failures.expect(
                format!("{method} {path}"),
                found.is_some_and(|op| op != Operation::Unclassified),
                format!("classified as {found:?}"),
            );
        }
    }
    let set = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).unwrap();
    let service = set
        .file
        .iter()
        .flat_map(|file| &file.service)
        .find(|service| service.name() == "JobsService")
        .expect("the job service");
    for method in &service.method {
        let path = format!("/proto.JobsService/{}", method.name());
        failures.expect(
            &path,
            operation(&axum::http::Method::POST, &path).is_some(),
            "not in the policy",
        );
    }
    failures.assert_none("routes and methods without a policy row");
}
