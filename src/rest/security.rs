//! The OpenAPI document's security: the bearer scheme (so Swagger UI's Authorize button takes a
//! token) and, on every `/api/v1` operation, its requirement and the 401 and 403 that the
//! access guard (`crate::access`) answers before the handler runs. Written once here, not per
//! handler, as the guard is one for all calls.

use utoipa::{
    Modify,
    openapi::{
        ContentBuilder, OpenApi, Ref, RefOr,
        header::HeaderBuilder,
        path::Operation,
        response::ResponseBuilder,
        schema::{ObjectBuilder, Type},
        security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
    },
};

/// The name of the scheme in the document.
const SCHEME: &str = "bearer";

/// Adds the scheme, the requirement and the refusals.
pub(crate) struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A JWT whose `role` (or `roles`) claim is viewer, operator or admin. \
                         Needed only when the service is configured with keys; older clients \
                         may send the token without `Bearer `.",
                    ))
                    .build(),
            ),
        );
        for (path, operation) in operations(openapi) {
            if path.starts_with("/api/v1/") {
                secure(operation);
            }
        }
    }
}

/// Every operation of the document, with its path.
pub(super) fn operations(openapi: &mut OpenApi) -> impl Iterator<Item = (&str, &mut Operation)> {
    openapi.paths.paths.iter_mut().flat_map(|(path, item)| {
        [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        .map(move |operation| (path.as_str(), operation))
    })
}

fn secure(operation: &mut Operation) {
    operation.security = Some(vec![SecurityRequirement::new(SCHEME, Vec::<String>::new())]);
    let refusal = |description: &str, challenge: &str| {
        let problem = ContentBuilder::new()
            .schema(Some(RefOr::Ref(Ref::from_schema_name("Problem"))))
            .build();
        let header = HeaderBuilder::new()
            .schema(ObjectBuilder::new().schema_type(Type::String))
            .description(Some(challenge))
            .build();
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content("application/problem+json", problem)
                .header("WWW-Authenticate", header)
                .build(),
        )
    };
    let responses = &mut operation.responses.responses;
    responses.insert(
        "401".into(),
        refusal(
            "No token, or one that is malformed, expired, not yet valid or not signed by a known key",
            r#"`Bearer realm="scheduler"`, with `error="invalid_token"` when a token came"#,
        ),
    );
    responses.insert(
        "403".into(),
        refusal(
            "The token's role is too low for this call",
            r#"`Bearer realm="scheduler", error="insufficient_scope", scope="<role>"`"#,
        ),
    );
}
