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
