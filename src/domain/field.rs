//! The errors of parsing raw input: every field at fault, named by its REST path.

use serde::Serialize;
use utoipa::ToSchema;

/// One field's problem, named by its REST path (`schedule.runAt`, `jobData.Subject`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// The field's REST path; each transport names it its own way.
    pub field: String,
    /// What is wrong with it, as a sentence without its subject (`must be at least 1`).
    pub message: String,
}

impl FieldError {
    /// The problem `message` of `field`.
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// Input that cannot be accepted, with every field error at once, sorted by field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the request has invalid fields")]
pub struct Invalid(pub Vec<FieldError>);

impl Invalid {
    /// A single field error.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self(vec![FieldError::new(field, message)])
    }

    /// Every error of `errors`, sorted by field; `Ok` when there is none.
    pub fn check(mut errors: Vec<FieldError>) -> Result<(), Self> {
        if errors.is_empty() {
            return Ok(());
        }
        errors.sort_by(|a, b| a.field.cmp(&b.field));
        Err(Self(errors))
    }
}

/// Collects the field errors of several checks, so all of them are reported at once.
#[derive(Debug, Default)]
pub struct Errors(Vec<FieldError>);

impl Errors {
    /// No errors yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one field error.
    pub fn push(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    /// Records field errors found elsewhere.
    pub fn extend(&mut self, errors: impl IntoIterator<Item = FieldError>) {
        self.0.extend(errors);
    }

    /// The value of a check, recording its errors.
    pub fn take<T>(&mut self, checked: Result<T, Invalid>) -> Option<T> {
        match checked {
            Ok(value) => Some(value),
            Err(Invalid(mut errors)) => {
                self.0.append(&mut errors);
                None
            }
        }
    }

    /// `value` when nothing was recorded, else every recorded error, sorted by field.
    pub fn finish<T>(self, value: impl FnOnce() -> Option<T>) -> Result<T, Invalid> {
        Invalid::check(self.0)?;
        // Every check recorded its error or gave its value: a missing one is a bug, reported
        // as an error of the whole input rather than a panic.
        value().ok_or_else(|| Invalid::field("body", "could not be checked"))
    }
}
