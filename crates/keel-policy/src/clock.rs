//! Time as a parameter.
//!
//! Policies never read a clock themselves: every decision takes `now` as an
//! argument. That keeps them deterministic and lets tests drive hours of
//! simulated traffic in microseconds. The [`Clock`] trait is what the engine
//! holds to produce those instants; [`ManualClock`] is shipped here (as
//! governor ships its fake clock) so users of the crate can test their own
//! code the same way.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

/// A source of monotonic and wall-clock time.
pub trait Clock: Send + Sync + 'static {
    /// Monotonic time, for every policy decision.
    fn now(&self) -> Instant;
    /// Wall-clock time, only to interpret absolute dates sent by providers
    /// (`Retry-After: <HTTP-date>`, `anthropic-ratelimit-*-reset`).
    fn system_now(&self) -> SystemTime;
}

/// The real clock of the process.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn system_now(&self) -> SystemTime {
        SystemTime::now()
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Instant {
        (**self).now()
    }

    fn system_now(&self) -> SystemTime {
        (**self).system_now()
    }
}

#[derive(Debug)]
struct ManualState {
    offset: Duration,
    system: SystemTime,
}

/// A clock that only moves when told to. Clones share the same time.
///
/// ```
/// use keel_policy::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let t0 = clock.now();
/// clock.clone().advance(Duration::from_secs(5));
/// assert_eq!(clock.now() - t0, Duration::from_secs(5));
/// ```
#[derive(Clone, Debug)]
pub struct ManualClock {
    base: Instant,
    state: Arc<Mutex<ManualState>>,
}

impl ManualClock {
    /// Wall-clock start of every new manual clock: 2024-01-01T00:00:00Z.
    pub const DEFAULT_SYSTEM_START: Duration = Duration::from_secs(1_704_067_200);

    /// A clock frozen at an arbitrary instant; its wall clock starts at
    /// [`ManualClock::DEFAULT_SYSTEM_START`] after the Unix epoch.
    pub fn new() -> Self {
        ManualClock {
            base: Instant::now(),
            state: Arc::new(Mutex::new(ManualState {
                offset: Duration::ZERO,
                system: SystemTime::UNIX_EPOCH + Self::DEFAULT_SYSTEM_START,
            })),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut ManualState) -> R) -> R {
        let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }

    /// Moves both the monotonic and the wall clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.with(|s| {
            s.offset = s.offset.saturating_add(by);
            s.system = s.system.checked_add(by).unwrap_or(s.system);
        });
    }

    /// Sets the wall clock (the monotonic clock is unaffected).
    pub fn set_system(&self, at: SystemTime) {
        self.with(|s| s.system = at);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        let offset = self.with(|s| s.offset);
        self.base.checked_add(offset).unwrap_or(self.base)
    }

    fn system_now(&self) -> SystemTime {
        self.with(|s| s.system)
    }
}
