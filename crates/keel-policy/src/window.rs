//! A sliding window of counters, shared by the retry budget, the breaker's
//! failure ratio and adaptive backoff.
//!
//! The window is split into [`BUCKETS`] buckets; a bucket is dropped whole
//! when it leaves the window, so the effective window is between
//! `(BUCKETS-1)/BUCKETS` and `1` times the configured length. Memory and
//! time per call are constant.

use std::time::{Duration, Instant};

/// Number of buckets per window.
pub(crate) const BUCKETS: usize = 10;

#[derive(Clone, Copy, Debug)]
struct Bucket<const K: usize> {
    /// Bucket index + 1 (0 = never used).
    tick: u64,
    counts: [u64; K],
}

/// `K` counters over a sliding window.
#[derive(Clone, Debug)]
pub(crate) struct SlidingWindow<const K: usize> {
    width_ns: u128,
    origin: Option<Instant>,
    buckets: [Bucket<K>; BUCKETS],
}

impl<const K: usize> SlidingWindow<K> {
    pub(crate) fn new(window: Duration) -> Self {
        SlidingWindow {
            width_ns: (window.as_nanos() / BUCKETS as u128).max(1),
            origin: None,
            buckets: [Bucket {
                tick: 0,
                counts: [0; K],
            }; BUCKETS],
        }
    }

    fn tick(&mut self, now: Instant) -> u64 {
        let origin = *self.origin.get_or_insert(now);
        let since = now.saturating_duration_since(origin).as_nanos() / self.width_ns;
        u64::try_from(since).unwrap_or(u64::MAX - 1) + 1
    }

    fn peek_tick(&self, now: Instant) -> Option<u64> {
        let origin = self.origin?;
        let since = now.saturating_duration_since(origin).as_nanos() / self.width_ns;
        Some(u64::try_from(since).unwrap_or(u64::MAX - 1) + 1)
    }

    /// Adds `n` to counter `idx` at `now`.
    pub(crate) fn add(&mut self, now: Instant, idx: usize, n: u64) {
        let tick = self.tick(now);
        let slot = &mut self.buckets[(tick % BUCKETS as u64) as usize];
        if slot.tick != tick {
            // A stale bucket (or an out-of-order instant from an older one,
            // which is folded into the current bucket instead of lost).
            if slot.tick < tick {
                *slot = Bucket {
                    tick,
                    counts: [0; K],
                };
            }
        }
        if let Some(c) = slot.counts.get_mut(idx) {
            *c = c.saturating_add(n);
        }
    }

    /// Sums of every counter over the window ending at `now`.
    pub(crate) fn totals(&self, now: Instant) -> [u64; K] {
        let mut out = [0; K];
        let Some(current) = self.peek_tick(now) else {
            return out;
        };
        for b in &self.buckets {
            if b.tick != 0 && b.tick <= current && b.tick + (BUCKETS as u64) > current {
                for (o, c) in out.iter_mut().zip(b.counts) {
                    *o = o.saturating_add(c);
                }
            }
        }
        out
    }

    /// Forgets everything.
    pub(crate) fn clear(&mut self) {
        for b in &mut self.buckets {
            b.tick = 0;
            b.counts = [0; K];
        }
    }
}
