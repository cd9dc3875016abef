//! Server retry hints and rate-limit headers.
//!
//! Providers tell us when to come back, in five dialects: `retry-after-ms`,
//! `Retry-After` (delta-seconds or an HTTP date), OpenAI's
//! `x-ratelimit-reset-{requests,tokens}` (Go durations such as `6m0s`) and
//! Anthropic's `anthropic-ratelimit-*-reset` (RFC 3339 instants). Honouring
//! them beats any backoff formula: the server knows when capacity returns.
//!
//! Header values come from the network, so parsing is total: garbage is
//! ignored, dates in the past mean "now", and absurd values are capped at
//! [`MAX_HINT`] (a day) so a typo upstream cannot park a request forever.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

/// Largest delay a provider header can ask for; longer values are capped.
pub const MAX_HINT: Duration = Duration::from_secs(24 * 60 * 60);

/// A server-provided delay before the next attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryHint {
    /// How long to wait from the moment the response was received.
    pub after: Duration,
    /// Which header said so.
    pub source: HintSource,
}

/// The header a [`RetryHint`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HintSource {
    /// `retry-after-ms` (OpenAI, Azure).
    RetryAfterMs,
    /// `Retry-After` (RFC 9110).
    RetryAfter,
    /// `x-ratelimit-reset-requests` / `x-ratelimit-reset-tokens` (OpenAI).
    RateLimitReset,
    /// `anthropic-ratelimit-*-reset` (Anthropic).
    AnthropicReset,
    /// A `google.rpc.RetryInfo` detail's `retryDelay` in a Google error body (Gemini).
    RetryInfo,
}

impl HintSource {
    /// Stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            HintSource::RetryAfterMs => "retry_after_ms",
            HintSource::RetryAfter => "retry_after",
            HintSource::RateLimitReset => "ratelimit_reset",
            HintSource::AnthropicReset => "anthropic_reset",
            HintSource::RetryInfo => "retry_info",
        }
    }
}

/// `anthropic-ratelimit-{kind}-{remaining,reset,limit}` for each kind.
struct AnthropicNames {
    kind: &'static str,
    remaining: &'static str,
    reset: &'static str,
    limit: &'static str,
}

macro_rules! anthropic_names {
    ($($kind:literal),*) => {
        [$(AnthropicNames {
            kind: $kind,
            remaining: concat!("anthropic-ratelimit-", $kind, "-remaining"),
            reset: concat!("anthropic-ratelimit-", $kind, "-reset"),
            limit: concat!("anthropic-ratelimit-", $kind, "-limit"),
        }),*]
    };
}

const ANTHROPIC: [AnthropicNames; 4] =
    anthropic_names!("requests", "tokens", "input-tokens", "output-tokens");

fn anthropic(kind: &str) -> Option<&'static AnthropicNames> {
    ANTHROPIC.iter().find(|n| n.kind == kind)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

fn cap(d: Duration) -> Duration {
    d.min(MAX_HINT)
}

/// Parses a non-negative decimal made of digits and at most one dot
/// (`"2"`, `"0.5"`, `"1.25"`); rejects signs, exponents, `inf` and `NaN`.
fn parse_plain_decimal(s: &str) -> Option<f64> {
    if s.is_empty() || s.len() > 32 || s == "." {
        return None;
    }
    let mut dots = 0;
    for b in s.bytes() {
        match b {
            b'0'..=b'9' => {}
            b'.' => dots += 1,
            _ => return None,
        }
    }
    if dots > 1 {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0)
}

fn secs_f64(secs: f64) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        Duration::ZERO
    } else {
        Duration::try_from_secs_f64(secs).map_or(MAX_HINT, cap)
    }
}

fn until(at: SystemTime, now: SystemTime) -> Duration {
    cap(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `retry-after-ms: 1500` (fractional milliseconds allowed).
fn retry_after_ms(headers: &HeaderMap) -> Option<Duration> {
    let ms = parse_plain_decimal(header(headers, "retry-after-ms")?)?;
    Some(secs_f64(ms / 1000.0))
}

/// `Retry-After: 2`, `Retry-After: 0.5` or `Retry-After: Wed, 21 Oct 2015 07:28:00 GMT`.
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = header(headers, "retry-after")?;
    if let Some(secs) = parse_plain_decimal(value) {
        return Some(secs_f64(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(until(at, now))
}

/// A reset header value: a Go duration (`6m0s`), or, leniently, bare seconds.
fn parse_reset_duration(s: &str) -> Option<Duration> {
    parse_go_duration(s)
        .or_else(|| parse_plain_decimal(s).map(secs_f64))
        .map(cap)
}

/// Parses an RFC 3339 instant, accepting `Z` or any `±HH:MM` offset.
pub(crate) fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    if let Ok(t) = humantime::parse_rfc3339(s) {
        return Some(t);
    }
    // humantime only knows UTC; apply other offsets by hand.
    let split = s.len().checked_sub(6)?;
    let (stamp, offset) = (s.get(..split)?, s.get(split..)?);
    let ob = offset.as_bytes();
    if ob.len() != 6 || ob[3] != b':' {
        return None;
    }
    let sign = match ob[0] {
        b'+' => 1i64,
        b'-' => -1i64,
        _ => return None,
    };
    // Digits only: `u64::from_str` would also take a sign (`+05:+3`).
    if !ob[1..3].iter().chain(&ob[4..6]).all(u8::is_ascii_digit) {
        return None;
    }
    let hours: u64 = offset.get(1..3)?.parse().ok()?;
    let minutes: u64 = offset.get(4..6)?.parse().ok()?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    let utc_stamp = format!("{stamp}Z");
    let local = humantime::parse_rfc3339(&utc_stamp).ok()?;
    let shift = Duration::from_secs(hours * 3600 + minutes * 60);
    // local time = UTC + offset, so UTC = local - offset.
    if sign > 0 {
        local.checked_sub(shift)
    } else {
        local.checked_add(shift)
    }
}

fn num(headers: &HeaderMap, name: &str) -> Option<u64> {
    let v = header(headers, name)?;
    if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// Picks the reset that matters: among limits whose remaining count is 0,
/// the longest; if none is known to be exhausted, the longest of all.
fn pick_reset(candidates: &[(Option<u64>, Option<Duration>)]) -> Option<Duration> {
    let exhausted = candidates
        .iter()
        .filter(|(remaining, _)| *remaining == Some(0))
        .filter_map(|(_, reset)| *reset)
        .max();
    exhausted.or_else(|| candidates.iter().filter_map(|(_, reset)| *reset).max())
}

fn openai_reset(headers: &HeaderMap) -> Option<Duration> {
    let requests = (
        num(headers, "x-ratelimit-remaining-requests"),
        header(headers, "x-ratelimit-reset-requests").and_then(parse_reset_duration),
    );
    let tokens = (
        num(headers, "x-ratelimit-remaining-tokens"),
        header(headers, "x-ratelimit-reset-tokens").and_then(parse_reset_duration),
    );
    pick_reset(&[requests, tokens])
}

fn anthropic_reset_of(headers: &HeaderMap, kind: &str, now: SystemTime) -> Option<Duration> {
    let value = header(headers, anthropic(kind)?.reset)?;
    parse_rfc3339(value).map(|at| until(at, now))
}

fn anthropic_reset(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let candidates = ANTHROPIC.map(|names| {
        (
            num(headers, names.remaining),
            header(headers, names.reset)
                .and_then(parse_rfc3339)
                .map(|at| until(at, now)),
        )
    });
    pick_reset(&candidates)
}

/// Only the explicit "come back after" headers: `retry-after-ms` and
/// `Retry-After`.
///
/// Use this for failures that are not rate limits (a 503 with `Retry-After`):
/// OpenAI sends `x-ratelimit-reset-*` on *every* response, and waiting for a
/// token-window reset after a 500 would be wrong.
pub fn explicit_retry_hint(headers: &HeaderMap, now: SystemTime) -> Option<RetryHint> {
    if let Some(after) = retry_after_ms(headers) {
        return Some(RetryHint {
            after,
            source: HintSource::RetryAfterMs,
        });
    }
    retry_after(headers, now).map(|after| RetryHint {
        after,
        source: HintSource::RetryAfter,
    })
}

/// The server's retry hint, if any, in order of precedence: `retry-after-ms`,
/// `Retry-After`, `x-ratelimit-reset-{requests,tokens}`,
/// `anthropic-ratelimit-*-reset`.
///
/// For the reset headers, the limit that is exhausted (remaining `0`) decides;
/// if none is known to be exhausted, the longest reset is taken. Unparseable
/// headers are skipped, past dates give a zero delay, and everything is
/// capped at [`MAX_HINT`].
///
/// ```
/// use http::HeaderMap;
/// use keel_policy::{retry_hint, HintSource};
/// use std::time::{Duration, SystemTime};
///
/// let mut headers = HeaderMap::new();
/// headers.insert("x-ratelimit-remaining-tokens", "0".parse().unwrap());
/// headers.insert("x-ratelimit-reset-tokens", "6m0s".parse().unwrap());
/// headers.insert("x-ratelimit-reset-requests", "20ms".parse().unwrap());
/// let hint = retry_hint(&headers, SystemTime::now()).unwrap();
/// assert_eq!(hint.after, Duration::from_secs(360));
/// assert_eq!(hint.source, HintSource::RateLimitReset);
/// ```
pub fn retry_hint(headers: &HeaderMap, now: SystemTime) -> Option<RetryHint> {
    if let Some(hint) = explicit_retry_hint(headers, now) {
        return Some(hint);
    }
    if let Some(after) = openai_reset(headers) {
        return Some(RetryHint {
            after,
            source: HintSource::RateLimitReset,
        });
    }
    anthropic_reset(headers, now).map(|after| RetryHint {
        after,
        source: HintSource::AnthropicReset,
    })
}

const NANOS_PER_UNIT: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Parses a Go `time.Duration` string: `"1s"`, `"6m0s"`, `"20ms"`,
/// `"1h30m"`, `"0.5s"`, `"1.5h"`, `"0"`.
///
/// Negative durations, missing units and overflow give `None`.
///
/// ```
/// use keel_policy::parse_go_duration;
/// use std::time::Duration;
///
/// assert_eq!(parse_go_duration("6m0s"), Some(Duration::from_secs(360)));
/// assert_eq!(parse_go_duration("0.5s"), Some(Duration::from_millis(500)));
/// assert_eq!(parse_go_duration("soon"), None);
/// ```
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        // Number: digits, optional fraction.
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &after_dot[..frac_len];
            rest = &after_dot[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        // Unit: the longest known unit that prefixes the rest.
        let (unit, nanos) = NANOS_PER_UNIT
            .iter()
            .filter(|(u, _)| rest.starts_with(u))
            .max_by_key(|(u, _)| u.len())?;
        rest = &rest[unit.len()..];

        let int_value: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().ok()?
        };
        let mut value = int_value.checked_mul(*nanos)?;
        // Fraction, truncated to the precision that can matter (nanoseconds).
        let mut scale = *nanos;
        for digit in frac_part.bytes().take(20) {
            scale /= 10;
            if scale == 0 {
                break;
            }
            value = value.checked_add(u128::from(digit - b'0') * scale)?;
        }
        total = total.checked_add(value)?;
    }
    let secs = u64::try_from(total / 1_000_000_000).ok()?;
    // Go's Duration is an i64 of nanoseconds.
    if total > i64::MAX as u128 {
        return None;
    }
    Some(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// The provider's view of its rate limits, from response headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateLimitHeaders {
    /// Requests left in the current window.
    pub remaining_requests: Option<u64>,
    /// Tokens left in the current window.
    pub remaining_tokens: Option<u64>,
    /// Time until the request window resets.
    pub reset_requests: Option<Duration>,
    /// Time until the token window resets.
    pub reset_tokens: Option<Duration>,
    /// Request limit per window.
    pub limit_requests: Option<u64>,
    /// Token limit per window.
    pub limit_tokens: Option<u64>,
}

impl RateLimitHeaders {
    /// True if no header was recognised.
    pub fn is_empty(&self) -> bool {
        *self == RateLimitHeaders::default()
    }
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_opt(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Reads OpenAI `x-ratelimit-*` and Anthropic `anthropic-ratelimit-*`
/// headers. OpenAI's take precedence when both are present.
///
/// For Anthropic, `tokens` is used when present; otherwise the tighter of
/// `input-tokens` and `output-tokens`.
///
/// ```
/// use http::HeaderMap;
/// use keel_policy::rate_limit_headers;
/// use std::time::{Duration, SystemTime};
///
/// let mut h = HeaderMap::new();
/// h.insert("x-ratelimit-limit-requests", "500".parse().unwrap());
/// h.insert("x-ratelimit-remaining-requests", "499".parse().unwrap());
/// h.insert("x-ratelimit-reset-requests", "120ms".parse().unwrap());
/// let rl = rate_limit_headers(&h, SystemTime::now());
/// assert_eq!(rl.remaining_requests, Some(499));
/// assert_eq!(rl.reset_requests, Some(Duration::from_millis(120)));
/// ```
pub fn rate_limit_headers(headers: &HeaderMap, now: SystemTime) -> RateLimitHeaders {
    // One pass over the names first: most answers carry none of these, and
    // the lookups below hash and compare a dozen names.
    let any = headers.keys().any(|k| {
        let k = k.as_str();
        k.starts_with("x-ratelimit-") || k.starts_with("anthropic-ratelimit-")
    });
    if !any {
        return RateLimitHeaders::default();
    }
    let a_num = |kind: &str, what: &str| {
        let names = anthropic(kind)?;
        num(
            headers,
            if what == "limit" {
                names.limit
            } else {
                names.remaining
            },
        )
    };
    let a_tokens = |what: &str| {
        a_num("tokens", what)
            .or_else(|| min_opt(a_num("input-tokens", what), a_num("output-tokens", what)))
    };
    let a_tokens_reset = anthropic_reset_of(headers, "tokens", now).or_else(|| {
        max_opt(
            anthropic_reset_of(headers, "input-tokens", now),
            anthropic_reset_of(headers, "output-tokens", now),
        )
    });
    RateLimitHeaders {
        remaining_requests: num(headers, "x-ratelimit-remaining-requests")
            .or_else(|| a_num("requests", "remaining")),
        remaining_tokens: num(headers, "x-ratelimit-remaining-tokens")
            .or_else(|| a_tokens("remaining")),
        reset_requests: header(headers, "x-ratelimit-reset-requests")
            .and_then(parse_reset_duration)
            .or_else(|| anthropic_reset_of(headers, "requests", now)),
        reset_tokens: header(headers, "x-ratelimit-reset-tokens")
            .and_then(parse_reset_duration)
            .or(a_tokens_reset),
        limit_requests: num(headers, "x-ratelimit-limit-requests")
            .or_else(|| a_num("requests", "limit")),
        limit_tokens: num(headers, "x-ratelimit-limit-tokens").or_else(|| a_tokens("limit")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_offsets_are_digits_only() {
        let utc = parse_rfc3339("2025-06-15T12:00:00Z");
        let plus = parse_rfc3339("2025-06-15T17:03:00+05:03");
        assert!(utc.is_some());
        assert_eq!(plus, utc);
        // A sign inside the offset used to parse as +05:03.
        assert_eq!(parse_rfc3339("2025-06-15T17:03:00+05:+3"), None);
        assert_eq!(parse_rfc3339("2025-06-15T17:03:00++5:03"), None);
        assert_eq!(parse_rfc3339("2025-06-15T17:03:00+24:00"), None);
    }
}
