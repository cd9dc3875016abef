//! Bulkhead: a cap on requests in flight per deployment.
//!
//! Rate limits bound how fast requests *start*; a slow deployment can still
//! accumulate thousands of open requests (and sockets, and memory) while it
//! hangs. The bulkhead bounds how many are *open at once*, so one sick
//! deployment cannot drown the gateway. Unlike the other policies this one
//! is shared by reference and uses an atomic counter: acquiring must not
//! need a lock, and the permit must be released on every path (success,
//! error, cancellation), which `Drop` guarantees.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::error::{check_at_least_one, PolicyError};

/// Max in-flight limiter.
///
/// ```
/// use keel_policy::Bulkhead;
/// use std::sync::Arc;
///
/// let bulkhead = Arc::new(Bulkhead::new(1)?);
/// let permit = bulkhead.try_acquire().unwrap();
/// assert!(bulkhead.try_acquire().is_err());
/// drop(permit);
/// assert_eq!(bulkhead.in_flight(), 0);
/// # Ok::<(), keel_policy::PolicyError>(())
/// ```
#[derive(Debug)]
pub struct Bulkhead {
    max: u32,
    in_flight: AtomicU32,
}

/// The bulkhead is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bulkhead full ({max} in flight)")]
pub struct BulkheadFull {
    /// The configured maximum.
    pub max: u32,
}

/// One slot in a [`Bulkhead`]; released when dropped.
#[derive(Debug)]
pub struct BulkheadPermit {
    bulkhead: Arc<Bulkhead>,
}

impl Bulkhead {
    /// A bulkhead admitting at most `max` (>= 1) concurrent requests.
    pub fn new(max: u32) -> Result<Self, PolicyError> {
        check_at_least_one("bulkhead.max_in_flight", max)?;
        Ok(Bulkhead {
            max,
            in_flight: AtomicU32::new(0),
        })
    }

    /// Takes a slot if one is free.
    pub fn try_acquire(self: &Arc<Self>) -> Result<BulkheadPermit, BulkheadFull> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .map(|_| BulkheadPermit {
                bulkhead: Arc::clone(self),
            })
            .map_err(|_| BulkheadFull { max: self.max })
    }

    /// Requests currently holding a permit.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// The configured maximum.
    pub fn max(&self) -> u32 {
        self.max
    }
}

impl Drop for BulkheadPermit {
    fn drop(&mut self) {
        self.bulkhead.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}
