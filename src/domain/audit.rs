//! Who asked for a change, and why: recorded on the job (`createdBy`, `updatedBy`), on its
//! events and on the ledger records an operation makes. Without access control there is no
//! actor, and none is made up.

use super::field::Invalid;

/// Longest `reason` a caller may give, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// The actor and reason of a change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audit {
    /// The token's subject; `None` without auth or when the token names none.
    pub actor: Option<String>,
    /// Why, as the caller said (pause, resume, trigger, cancel).
    pub reason: Option<String>,
    /// The W3C `traceparent` of the request that asked, while tracing is on: on the job, its
    /// events and the runs it made, so what follows from the change continues its trace.
    pub trace: Option<String>,
}

impl Audit {
    /// A change by `actor`, with no reason given.
    pub fn by(actor: Option<String>) -> Self {
        Self {
            actor,
            reason: None,
            trace: None,
        }
    }

    /// The change, made in the trace `trace` names.
    pub fn in_trace(mut self, trace: Option<String>) -> Self {
        self.trace = trace;
        self
    }

    /// A change by `actor` for a reason the caller gave: at most [`MAX_REASON_CHARS`]
    /// characters as given (the document's `maxLength`), then trimmed; empty is none.
    pub fn with_reason(actor: Option<String>, reason: Option<String>) -> Result<Self, Invalid> {
        if reason
            .as_ref()
            .is_some_and(|r| r.chars().count() > MAX_REASON_CHARS)
        {
            return Err(Invalid::field(
                "reason",
                format!("must be at most {MAX_REASON_CHARS} characters"),
            ));
        }
        let reason = reason
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty());
        Ok(Self {
            actor,
            reason,
            trace: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_trimmed_and_bounded() {
        let audit = Audit::with_reason(Some("ana".into()), Some("  disk full ".into())).unwrap();
        assert_eq!(audit.reason.as_deref(), Some("disk full"));
        assert_eq!(
            Audit::with_reason(None, Some(" ".into())).unwrap(),
            Audit::default()
        );
        let long = "é".repeat(MAX_REASON_CHARS + 1);
        assert!(Audit::with_reason(None, Some(long)).is_err());
        assert!(Audit::with_reason(None, Some("é".repeat(MAX_REASON_CHARS))).is_ok());
        // The bound is on the reason as sent, as the document's `maxLength` says: blanks
        // around it count.
        let padded = format!("\n{}\u{85}", "x".repeat(MAX_REASON_CHARS - 1));
        assert!(Audit::with_reason(None, Some(padded)).is_err());
    }
}
