//! Who may call what: the roles, the operations of both protocols, and the one table that
//! says which role each needs.
//!
//! Every request on the port is classified here by its method and path, REST and gRPC alike,
//! so a call added later is covered the day it is added: a path this table does not know needs
//! `admin` until someone decides otherwise.

use std::fmt;

use axum::http::Method;

/// The roles, from least to most trusted: each may do what the ones below it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads jobs, runs, previews and the event streams.
    Viewer,
    /// Also pauses, resumes, triggers and cancels jobs, takes runs to do, and reports runs'
    /// results.
    Operator,
    /// Also creates, changes and deletes jobs.
    Admin,
}

impl Role {
    /// Every role, least trusted first.
    pub const ALL: [Self; 3] = [Self::Viewer, Self::Operator, Self::Admin];

    /// The role a claim value names (`viewer`, `operator`, `admin`, in any case).
    pub fn from_claim(value: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|role| role.name().eq_ignore_ascii_case(value.trim()))
    }

    /// Its name in tokens and documents.
    pub fn name(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A call of the API, whichever protocol carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `POST /api/v1/jobs`, `CreateJob`.
    CreateJob,
    /// `GET /api/v1/jobs`, `ListJobs`.
    ListJobs,
    /// `GET /api/v1/jobs/{id}`, `GetJob`.
    GetJob,
    /// `PATCH /api/v1/jobs/{id}`, `UpdateJob`.
    UpdateJob,
    /// `DELETE /api/v1/jobs/{id}`, `DeleteJob`.
    DeleteJob,
    /// `POST /api/v1/jobs/{id}/pause`, `PauseJob`.
    PauseJob,
    /// `POST /api/v1/jobs/{id}/resume`, `ResumeJob`.
    ResumeJob,
    /// `POST /api/v1/jobs/{id}/trigger`, `TriggerJob`.
    TriggerJob,
    /// `POST /api/v1/jobs/{id}/cancel`, `CancelJob`.
    CancelJob,
    /// `GET /api/v1/jobs/{id}/runs`, `ListJobRuns`.
    ListRuns,
    /// `POST /api/v1/jobs/{id}/runs/{runId}/result`, `ReportRunResult`.
    ReportResult,
    /// `POST /api/v1/runs:claim`, `ClaimRuns`: a worker takes runs to do.
    ClaimRuns,
    /// `GET /api/v1/schedule/preview`, `PreviewSchedule`.
    PreviewSchedule,
    /// `GET /api/v1/events` (SSE), `WatchEvents`.
    WatchEvents,
    /// gRPC server reflection, when closed by `--auth-close-reflection`.
    Reflection,
    /// A path no entry names: anything added without a decision here.
    Unclassified,
}

impl Operation {
    /// The least role that may make the call.
    pub fn needs(self) -> Role {
        match self {
            Self::ListJobs
            | Self::GetJob
            | Self::ListRuns
            | Self::PreviewSchedule
            | Self::WatchEvents
            | Self::Reflection => Role::Viewer,
            Self::PauseJob
            | Self::ResumeJob
            | Self::TriggerJob
            | Self::CancelJob
            | Self::ReportResult
            | Self::ClaimRuns => Role::Operator,
            Self::CreateJob | Self::UpdateJob | Self::DeleteJob | Self::Unclassified => Role::Admin,
        }
    }
}

/// What a request needs before it reaches its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Nothing: health, readiness, metrics, the API documents, gRPC health.
    Open,
    /// A token whose role is at least the operation's.
    Needs(Operation),
}

/// Paths (and path prefixes, ending in `/`) anyone may call.
const OPEN: &[&str] = &[
    // The dashboard's files (its calls of the API carry the user's token).
    "/",
    "/ui",
    "/ui/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/api-docs/openapi.json",
    "/swagger-ui",
    "/swagger-ui/",
    "/grpc.health.v1.Health/",
];

/// The gRPC reflection services, open unless closed.
const REFLECTION: &[&str] = &[
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// The gRPC job service's methods.
const GRPC: &[(&str, Operation)] = &[
    ("CreateJob", Operation::CreateJob),
    ("GetJob", Operation::GetJob),
    ("ListJobs", Operation::ListJobs),
    ("UpdateJob", Operation::UpdateJob),
    ("DeleteJob", Operation::DeleteJob),
    ("ListJobRuns", Operation::ListRuns),
    ("ReportRunResult", Operation::ReportResult),
    ("WatchEvents", Operation::WatchEvents),
    ("PauseJob", Operation::PauseJob),
    ("ResumeJob", Operation::ResumeJob),
    ("TriggerJob", Operation::TriggerJob),
    ("CancelJob", Operation::CancelJob),
    ("PreviewSchedule", Operation::PreviewSchedule),
    ("ClaimRuns", Operation::ClaimRuns),
];

/// The gRPC job service's path prefix.
const GRPC_SERVICE: &str = "/proto.JobsService/";

/// The REST calls: method and path under `/api/v1`, `{}` standing for one segment.
const REST: &[(Method, &str, Operation)] = &[
    (Method::POST, "/jobs", Operation::CreateJob),
    (Method::GET, "/jobs", Operation::ListJobs),
    (Method::GET, "/jobs/{}", Operation::GetJob),
    (Method::PATCH, "/jobs/{}", Operation::UpdateJob),
    (Method::DELETE, "/jobs/{}", Operation::DeleteJob),
    (Method::POST, "/jobs/{}/pause", Operation::PauseJob),
    (Method::POST, "/jobs/{}/resume", Operation::ResumeJob),
    (Method::POST, "/jobs/{}/trigger", Operation::TriggerJob),
    (Method::POST, "/jobs/{}/cancel", Operation::CancelJob),
    (Method::GET, "/jobs/{}/runs", Operation::ListRuns),
    (
        Method::POST,
        "/jobs/{}/runs/{}/result",
        Operation::ReportResult,
    ),
    (Method::GET, "/schedule/preview", Operation::PreviewSchedule),
    (Method::GET, "/events", Operation::WatchEvents),
    (Method::POST, "/runs:claim", Operation::ClaimRuns),
];

/// The REST prefix.
const REST_PREFIX: &str = "/api/v1";

/// How requests are classified: the table above, and whether reflection is closed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// Reflection needs a viewer's token.
    pub close_reflection: bool,
}

impl Policy {
    /// What a request with this method and path needs.
    pub fn access(&self, method: &Method, path: &str) -> Access {
        // An entry ending in `/` is a prefix, but `/` itself is the root alone.
        let open = |entry: &&str| match entry.strip_suffix('/') {
            Some(prefix) if !prefix.is_empty() => path.starts_with(entry),
            _ => path == *entry,
        };
        if OPEN.iter().any(open) {
            return Access::Open;
        }
        if REFLECTION.iter().any(|prefix| path.starts_with(prefix)) {
            return if self.close_reflection {
                Access::Needs(Operation::Reflection)
            } else {
                Access::Open
            };
        }
        Access::Needs(operation(method, path).unwrap_or(Operation::Unclassified))
    }
}

/// The operation a request makes, when the table names it.
pub fn operation(method: &Method, path: &str) -> Option<Operation> {
    if let Some(name) = path.strip_prefix(GRPC_SERVICE) {
        return GRPC
            .iter()
            .find(|(method, _)| *method == name)
            .map(|(_, op)| *op);
    }
    let rest = path.strip_prefix(REST_PREFIX)?;
    // HEAD is a GET without its body: it reads what GET reads.
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    REST.iter()
        .find(|(m, template, _)| m == method && matches(template, rest))
        .map(|(_, _, op)| *op)
}

/// Whether a path matches a template whose `{}` segments match any one non-empty segment.
fn matches(template: &str, path: &str) -> bool {
    let mut expected = template.split('/');
    let mut actual = path.split('/');
    loop {
        match (expected.next(), actual.next()) {
            (None, None) => return true,
            (Some("{}"), Some(segment)) if !segment.is_empty() => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// Every REST call with its gRPC twin and the role both need, for documents.
pub fn table() -> Vec<(String, &'static str, Role)> {
    REST.iter()
        .map(|(method, path, op)| {
            let path = path.replacen("{}", "{id}", 1).replacen("{}", "{runId}", 1);
            let grpc = GRPC
                .iter()
                .find(|(_, o)| o == op)
                .map_or("", |(name, _)| *name);
            (format!("{method} {REST_PREFIX}{path}"), grpc, op.needs())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_call_needs_the_role_its_table_row_says() {
        let policy = Policy::default();
        let cases = [
            (Method::GET, "/healthz", Access::Open),
            (Method::GET, "/", Access::Open),
            (Method::GET, "/ui/app.js", Access::Open),
            (
                Method::GET,
                "/api/v1/jobs",
                Access::Needs(Operation::ListJobs),
            ),
            (Method::GET, "/readyz", Access::Open),
            (Method::GET, "/metrics", Access::Open),
            (Method::GET, "/api-docs/openapi.json", Access::Open),
            (Method::GET, "/swagger-ui/index.html", Access::Open),
            (Method::POST, "/grpc.health.v1.Health/Check", Access::Open),
            (
                Method::POST,
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                Access::Open,
            ),
            (
                Method::GET,
                "/api/v1/jobs",
                Access::Needs(Operation::ListJobs),
            ),
            (
                Method::HEAD,
                "/api/v1/jobs/abc",
                Access::Needs(Operation::GetJob),
            ),
            (
                Method::POST,
                "/api/v1/jobs/abc/runs/def/result",
                Access::Needs(Operation::ReportResult),
            ),
            (
                Method::POST,
                "/proto.JobsService/DeleteJob",
                Access::Needs(Operation::DeleteJob),
            ),
            (
                Method::POST,
                "/api/v1/runs:claim",
                Access::Needs(Operation::ClaimRuns),
            ),
            (
                Method::POST,
                "/proto.JobsService/ClaimRuns",
                Access::Needs(Operation::ClaimRuns),
            ),
            (
                Method::GET,
                "/api/v1/jobs//runs",
                Access::Needs(Operation::Unclassified),
            ),
            (
                Method::PUT,
                "/api/v1/jobs/abc",
                Access::Needs(Operation::Unclassified),
            ),
            (
                Method::POST,
                "/proto.JobsService/DropEverything",
                Access::Needs(Operation::Unclassified),
            ),
            (
                Method::GET,
                "/healthz/../api/v1/jobs",
                Access::Needs(Operation::Unclassified),
            ),
            (
                Method::GET,
                "/anything-else",
                Access::Needs(Operation::Unclassified),
            ),
        ];
        for (method, path, expected) in cases {
            assert_eq!(policy.access(&method, path), expected, "{method} {path}");
        }
        assert_eq!(Operation::Unclassified.needs(), Role::Admin);
    }

    #[test]
    fn closed_reflection_needs_a_viewer() {
        let policy = Policy {
            close_reflection: true,
        };
        assert_eq!(
            policy.access(
                &Method::POST,
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
            ),
            Access::Needs(Operation::Reflection)
        );
    }

    #[test]
    fn roles_are_ordered_and_read_from_claims_in_any_case() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        assert_eq!(Role::from_claim("Admin"), Some(Role::Admin));
        assert_eq!(Role::from_claim("root"), None);
    }

    #[test]
    fn every_rest_call_has_its_grpc_twin_in_the_table() {
        for (rest, grpc, _) in table() {
            assert!(!grpc.is_empty(), "{rest} has no gRPC twin");
        }
    }
}
