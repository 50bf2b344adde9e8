//! Table tests that report every failing row, not just the first.

use std::fmt::{Debug, Display};

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
