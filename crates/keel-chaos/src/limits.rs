//! Per-upstream rpm/tpm enforcement, shaped like the providers' own limits.
//!
//! Both providers describe their limits as buckets that refill continuously
//! ("remaining" and "time until the bucket is full again"), so that is what
//! is modelled: a bucket of `limit` units refilled at `limit` per minute.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// One limit's state as reported in headers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Window {
    pub(crate) limit: u64,
    pub(crate) remaining: u64,
    /// Until the bucket is full again.
    pub(crate) reset: Duration,
}

/// Requests and tokens windows (each present when that limit is set).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct LimitSnapshot {
    pub(crate) requests: Option<Window>,
    pub(crate) tokens: Option<Window>,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Which {
    Requests,
    Tokens,
}

/// A refused request: which limit, when to retry, and the state to report.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Denied {
    pub(crate) which: Which,
    pub(crate) retry_after: Duration,
    pub(crate) requested: u64,
    pub(crate) snapshot: LimitSnapshot,
}

#[derive(Debug)]
struct Bucket {
    limit: f64,
    level: f64,
    last: Instant,
}

impl Bucket {
    fn new(limit: u32, now: Instant) -> Self {
        Bucket {
            limit: f64::from(limit),
            level: f64::from(limit),
            last: now,
        }
    }

    fn per_sec(&self) -> f64 {
        self.limit / 60.0
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.level = (self.level + dt * self.per_sec()).min(self.limit);
        self.last = now;
    }

    /// Time until `n` units are available.
    fn wait_for(&self, n: f64) -> Duration {
        let missing = (n.min(self.limit) - self.level).max(0.0);
        Duration::from_secs_f64(missing / self.per_sec())
    }

    fn window(&self) -> Window {
        Window {
            limit: self.limit as u64,
            remaining: self.level.max(0.0).floor() as u64,
            reset: Duration::from_secs_f64((self.limit - self.level).max(0.0) / self.per_sec()),
        }
    }
}

/// The rpm/tpm buckets of one upstream.
#[derive(Debug)]
pub(crate) struct Limiter {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
}

impl Limiter {
    pub(crate) fn new(rpm: Option<u32>, tpm: Option<u32>, now: Instant) -> Option<Self> {
        if rpm.is_none() && tpm.is_none() {
            return None;
        }
        Some(Limiter {
            requests: rpm.map(|l| Bucket::new(l, now)),
            tokens: tpm.map(|l| Bucket::new(l, now)),
        })
    }

    fn snapshot(&self) -> LimitSnapshot {
        LimitSnapshot {
            requests: self.requests.as_ref().map(Bucket::window),
            tokens: self.tokens.as_ref().map(Bucket::window),
        }
    }

    /// Take one request and `tokens` tokens, or say why not.
    pub(crate) fn admit(&mut self, now: Instant, tokens: u64) -> Result<LimitSnapshot, Denied> {
        let tokens_f = tokens as f64;
        let mut refused = None;
        for (which, bucket, n) in [
            (Which::Requests, self.requests.as_mut(), 1.0),
            (Which::Tokens, self.tokens.as_mut(), tokens_f),
        ] {
            if let Some(b) = bucket {
                b.refill(now);
                if refused.is_none() && b.level < n.min(b.limit) {
                    refused = Some((which, b.wait_for(n), n as u64));
                }
            }
        }
        if let Some((which, retry_after, requested)) = refused {
            return Err(Denied {
                which,
                retry_after,
                requested,
                snapshot: self.snapshot(),
            });
        }
        if let Some(b) = self.requests.as_mut() {
            b.level -= 1.0;
        }
        if let Some(b) = self.tokens.as_mut() {
            b.level -= tokens_f.min(b.limit);
        }
        Ok(self.snapshot())
    }
}

/// `x-ratelimit-reset-*` style: "20ms", "1s", "1.5s", "6m0s", "1h2m3s".
pub(crate) fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let total = d.as_secs_f64();
    let hours = (total / 3600.0).floor() as u64;
    let minutes = ((total - hours as f64 * 3600.0) / 60.0).floor() as u64;
    let secs = total - hours as f64 * 3600.0 - minutes as f64 * 60.0;
    let mut secs_text = format!("{secs:.3}");
    while secs_text.ends_with('0') {
        secs_text.pop();
    }
    if secs_text.ends_with('.') {
        secs_text.pop();
    }
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&secs_text);
    out.push('s');
    out
}

/// RFC 3339 UTC timestamp of now + `d`, whole seconds rounded up
/// (`anthropic-ratelimit-*-reset`).
pub(crate) fn rfc3339_in(d: Duration) -> String {
    let at = SystemTime::now() + d;
    let unix = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut secs = unix.as_secs();
    if unix.subsec_nanos() > 0 {
        secs += 1;
    }
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, dd) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `retry-after` in whole seconds, rounded up, at least 1 when there is any wait.
pub(crate) fn retry_after_secs(d: Duration) -> u64 {
    let s = d.as_secs();
    if d.subsec_nanos() > 0 {
        s + 1
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(Duration::from_millis(20)), "20ms");
        assert_eq!(go_duration(Duration::from_secs(1)), "1s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(360)), "6m0s");
        assert_eq!(go_duration(Duration::from_secs(3723)), "1h2m3s");
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_844), (2024, 5, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_refuses_then_refills() {
        let now = Instant::now();
        let mut l = Limiter::new(Some(2), None, now).unwrap();
        assert!(l.admit(now, 0).is_ok());
        assert!(l.admit(now, 0).is_ok());
        let denied = l.admit(now, 0).unwrap_err();
        assert_eq!(denied.which, Which::Requests);
        assert_eq!(denied.retry_after, Duration::from_secs(30));
        assert!(l.admit(now + Duration::from_secs(30), 0).is_ok());
    }
}
