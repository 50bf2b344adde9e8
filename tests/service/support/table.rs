//! Table tests that report every failing row, not just the first.

use std::fmt::{Debug, Display};

use tonic::Code;
use tonic_types::StatusExt;

/// The rows of a table test that failed so far.
#[derive(Debug, Default)]
#[must_use = "a table's failures are only reported by `assert_none`"]
pub struct Failures(Vec<String>);

impl Failures {
    /// No failures yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records row `row` as failed unless `actual` is `expected`.
    pub fn expect_eq<T: PartialEq + Debug>(&mut self, row: impl Display, actual: T, expected: T) {
        if actual != expected {
            self.0
                .push(format!("{row}: got {actual:?}, expected {expected:?}"));
        }
    }

    /// Records row `row` as failed unless `ok`, saying why.
    pub fn expect(&mut self, row: impl Display, ok: bool, why: impl Display) {
        if !ok {
            self.0.push(format!("{row}: {why}"));
        }
    }

    /// Records row `row` as failed unless `answer` is an INVALID_ARGUMENT whose field
    /// violations name `field`.
    pub fn expect_invalid_argument<T>(
        &mut self,
        row: impl Display,
        field: &str,
        answer: Result<T, tonic::Status>,
    ) {
        match answer {
            Ok(_) => self.expect(row, false, "it was accepted"),
            Err(status) => {
                self.expect_eq(&row, status.code(), Code::InvalidArgument);
                let violations = status
                    .get_details_bad_request()
                    .map(|details| details.field_violations)
                    .unwrap_or_default();
                self.expect(
                    row,
                    violations.iter().any(|v| v.field == field),
                    format!("no violation names {field}: {violations:?}"),
                );
            }
        }
    }

    /// Fails the test, listing every failed row.
    pub fn assert_none(self, table: &str) {
        assert!(
            self.0.is_empty(),
            "{} of the rows of {table} failed:\n  {}",
            self.0.len(),
            self.0.join("\n  ")
        );
    }
}
