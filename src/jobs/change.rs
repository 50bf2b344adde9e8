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
    /// Whether it sends a cron expression, which takes evaluating.
    pub fn sends_cron(&self) -> bool {
        match self {
            Self::MergePatch(patch) => patch
                .get("schedule")
                .and_then(|schedule| schedule.get("cron"))
                .is_some_and(|cron| !cron.is_null()),
            Self::Replace(replacement) => replacement
                .schedule
                .as_ref()
                .is_some_and(|schedule| schedule.cron.is_some()),
        }
    }

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

/// The versions a change may apply to, from an `If-Match` precondition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfMatch(Vec<u64>);

impl IfMatch {
    /// Whether the stored `version` is one the precondition names.
    pub fn allows(&self, version: u64) -> bool {
        self.0.contains(&version)
    }
}

/// The precondition of an `If-Match` header or `if-match` metadata: a list of version ETags
/// (`"3"`, or `3`; `"3", "4"` matches either, RFC 9110 13.1.1), or `*` for any version
/// (`None`). A weak tag never matches (If-Match compares strongly), so a list of weak tags only
/// is a version mismatch like a stale one.
pub fn if_match(text: &str) -> Result<Option<IfMatch>, Error> {
    let text = text.trim();
    if text == "*" {
        return Ok(None);
    }
    let mut versions = Vec::new();
    for tag in text.split(',').map(str::trim) {
        if tag.starts_with("W/") {
            continue;
        }
        let version = tag
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .unwrap_or(tag);
        versions.push(version.parse::<u64>().map_err(|_| {
            Error::invalid("If-Match", "must be version ETags such as \"3\", or *")
        })?);
    }
    Ok(Some(IfMatch(versions)))
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
    fn if_match_takes_lists_of_versions_and_any_and_never_matches_weak_tags() {
        let allows = |text: &str, version| if_match(text).unwrap().unwrap().allows(version);
        assert!(allows("\"3\"", 3) && !allows("\"3\"", 4));
        assert!(allows(" 7 ", 7));
        assert!(
            allows("\"3\", \"4\"", 4) && allows("\"3\",\"4\"", 3) && !allows("\"3\", \"4\"", 5)
        );
        assert!(!allows("W/\"3\"", 3), "a weak tag never matches");
        assert!(allows("W/\"3\", \"3\"", 3));
        assert_eq!(if_match("*").unwrap(), None);
        for bad in ["three", "\"3\", x", "", "\"3"] {
            assert!(matches!(if_match(bad), Err(Error::Invalid(_))), "{bad:?}");
        }
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
