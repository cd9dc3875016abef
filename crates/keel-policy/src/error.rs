//! The one error type of `keel-policy`: a parameter that would make a policy
//! meaningless (zero attempts, a base delay above its cap, a ratio outside
//! `0..=1`).
//!
//! Every constructor validates its configuration and answers with a precise
//! message naming the key, what was expected and what was given, so
//! `keel check-config` can print it verbatim.

use std::time::Duration;

/// An invalid policy parameter.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum PolicyError {
    /// A configuration value outside its valid range.
    #[error("invalid {name}: expected {expected}, got {got}")]
    InvalidParameter {
        /// Dotted key path, e.g. `backoff.base`.
        name: &'static str,
        /// What a valid value looks like, e.g. `<= backoff.cap (10s)`.
        expected: String,
        /// The value that was given, formatted for humans.
        got: String,
    },
}

impl PolicyError {
    /// Shorthand for [`PolicyError::InvalidParameter`].
    pub fn invalid(name: &'static str, expected: impl Into<String>, got: impl ToString) -> Self {
        PolicyError::InvalidParameter {
            name,
            expected: expected.into(),
            got: got.to_string(),
        }
    }
}

/// Formats a duration the way configuration files spell it (`10s`, `200ms`).
pub(crate) fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Checks that `value` is a finite number inside `0..=1`.
pub(crate) fn check_unit_ratio(name: &'static str, value: f64) -> Result<(), PolicyError> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(PolicyError::invalid(name, "a number in 0..=1", value))
    }
}

/// Checks that a duration is strictly positive.
pub(crate) fn check_positive(name: &'static str, value: Duration) -> Result<(), PolicyError> {
    if value.is_zero() {
        Err(PolicyError::invalid(name, "> 0s", fmt_duration(value)))
    } else {
        Ok(())
    }
}

/// Checks that a count is at least one.
pub(crate) fn check_at_least_one(name: &'static str, value: u32) -> Result<(), PolicyError> {
    if value == 0 {
        Err(PolicyError::invalid(name, ">= 1", value))
    } else {
        Ok(())
    }
}
