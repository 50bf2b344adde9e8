//! Changes to a job's editable fields, as each transport expresses them, and the `If-Match`
//! precondition both honour.

use serde_json::Value;

use super::error::Error;
use crate::domain::{
    Invalid, JobInput, JobSpec, JobType, PolicyInput, ScheduleInput, input::json::decode_value,
};

/// A change to a job's editable fields.
#[derive(Debug, Clone)]
pub enum JobChange {
    /// An RFC 7396 JSON merge patch over the REST shape of the editable fields (REST's PATCH).
    MergePatch(Value),
    /// gRPC's UpdateJob: the five fields it carries replace the stored ones; the others keep
    /// their stored values where the request leaves them out.
    Replace(Box<JobReplacement>),
}

/// What gRPC's UpdateJob carries.
#[derive(Debug, Clone, PartialEq)]
pub struct JobReplacement {
    /// Replaces the name.
    pub name: String,
    /// Replaces the description.
    pub description: String,
    /// Replaces the job type.
    pub job_type: JobType,
    /// Replaces the job data whole (no merge).
    pub job_data: Value,
    /// Replaces the schedule when given; else the schedule is kept.
    pub schedule: Option<ScheduleInput>,
    /// Replaces each policy field it gives.
    pub policy: PolicyInput,
}

impl JobChange {
    /// The checked fields after the change is applied to `current`.
    pub fn apply(&self, current: &JobSpec) -> Result<JobSpec, Invalid> {
        match self {
            Self::MergePatch(patch) => {
                if !patch.is_object() {
                    return Err(Invalid::field(
                        "body",
                        "must be a JSON object (a merge patch)",
                    ));
                }
                let mut document = current.document();
                merge_patch(&mut document, patch);
                let input = decode_value::<JobInput>(document)?;
                // Only what the patch sends is checked again.
                match patch.get("schedule") {
                    None => input.parse_keeping_schedule(&current.schedule),
                    Some(_) => input.parse(),
                }
            }
            Self::Replace(replacement) => {
                let JobReplacement {
                    name,
                    description,
                    job_type,
                    job_data,
                    schedule,
                    policy,
                } = (**replacement).clone();
                let mut input = JobInput::from(current);
                input.name = name;
                input.description = Some(description);
                input.job_type = job_type;
                input.job_data = job_data;
                policy.lay_over(&mut input);
                // Only what the request sends is checked again.
                match schedule {
                    Some(schedule) => {
                        input.schedule = schedule;
                        input.parse()
                    }
                    None => input.parse_keeping_schedule(&current.schedule),
                }
            }
        }
    }
}

/// RFC 7396: objects merge recursively, `null` removes a member, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// The version a change is conditional on, from an `If-Match` header or `if-match` metadata:
/// a version ETag (`"3"`, or `3`), or `*` for any version (`None`). A weak tag never matches
/// (RFC 9110 compares If-Match strongly), so it is a version mismatch like a stale one.
pub fn if_match(text: &str) -> Result<Option<u64>, Error> {
    let text = text.trim();
    if text == "*" {
        return Ok(None);
    }
    if text.starts_with("W/") {
        return Err(Error::VersionMismatch);
    }
    text.trim_matches('"')
        .parse::<u64>()
        .map(Some)
        .map_err(|_| Error::invalid("If-Match", "must be a version ETag such as \"3\""))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
    }

    #[test]
    fn if_match_takes_versions_and_any_and_refuses_weak_tags() {
        assert_eq!(if_match("\"3\"").unwrap(), Some(3));
        assert_eq!(if_match(" 7 ").unwrap(), Some(7));
        assert_eq!(if_match("*").unwrap(), None);
        assert!(matches!(if_match("W/\"3\""), Err(Error::VersionMismatch)));
        assert!(matches!(if_match("three"), Err(Error::Invalid(_))));
    }

    #[test]
    fn a_replacement_keeps_what_it_leaves_out() {
        let input: JobInput = serde_json::from_value(json!({
            "name": "report", "jobType": "SMS", "jobData": {"To": "+1"},
            "schedule": {"cron": "0 9 * * MON", "timezone": "Europe/Berlin"},
            "retry": {"maxAttempts": 3, "backoffSeconds": 0}, "misfirePolicy": "FIRE_ALL"
        }))
        .unwrap();
        let current = input.parse().unwrap();
        let change = JobChange::Replace(Box::new(JobReplacement {
            name: "renamed".into(),
            description: String::new(),
            job_type: JobType::Sms,
            job_data: json!({}),
            schedule: None,
            policy: PolicyInput {
                max_attempts: Some(5),
                ..Default::default()
            },
        }));
        let next = change.apply(&current).unwrap();
        assert_eq!(next.name, "renamed");
        assert_eq!(next.schedule, current.schedule);
        assert_eq!(
            (next.retry.max_attempts, next.retry.backoff_seconds),
            (5, 0)
        );
        assert_eq!(next.misfire_policy, current.misfire_policy);
        assert!(next.job_data.is_empty());
    }
}
