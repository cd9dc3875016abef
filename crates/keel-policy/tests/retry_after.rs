//! One case per header format, precedence, and garbage.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity
)]

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use keel_policy::{
    explicit_retry_hint, parse_go_duration, rate_limit_headers, retry_hint, HintSource,
    RateLimitHeaders, RetryHint, MAX_HINT,
};

fn now() -> SystemTime {
    // 2024-06-10T06:13:20Z
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_718_000_000)
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn hint(pairs: &[(&str, &str)]) -> Option<RetryHint> {
    retry_hint(&headers(pairs), now())
}

fn h(after: Duration, source: HintSource) -> Option<RetryHint> {
    Some(RetryHint { after, source })
}

#[test]
fn each_header_format() {
    use HintSource::*;
    let ms = Duration::from_millis;
    let s = Duration::from_secs;
    let cases: &[(&[(&str, &str)], Option<RetryHint>)] = &[
        (&[("retry-after", "2")], h(s(2), RetryAfter)),
        (&[("retry-after", "0.5")], h(ms(500), RetryAfter)),
        (&[("retry-after", " 7 ")], h(s(7), RetryAfter)),
        (
            &[("retry-after", "Mon, 10 Jun 2024 06:13:50 GMT")],
            h(s(30), RetryAfter),
        ),
        (
            &[("retry-after", "Mon, 10 Jun 2024 06:00:00 GMT")],
            h(s(0), RetryAfter),
        ), // past
        (&[("retry-after-ms", "1500")], h(ms(1500), RetryAfterMs)),
        (
            &[("retry-after-ms", "12.5")],
            h(Duration::from_micros(12_500), RetryAfterMs),
        ),
        (
            &[("x-ratelimit-reset-requests", "1s")],
            h(s(1), RateLimitReset),
        ),
        (
            &[("x-ratelimit-reset-tokens", "6m0s")],
            h(s(360), RateLimitReset),
        ),
        (
            &[("x-ratelimit-reset-requests", "20ms")],
            h(ms(20), RateLimitReset),
        ),
        (
            &[("x-ratelimit-reset-tokens", "1h30m")],
            h(s(5400), RateLimitReset),
        ),
        (
            &[("x-ratelimit-reset-tokens", "0.5s")],
            h(ms(500), RateLimitReset),
        ),
        (
            &[("anthropic-ratelimit-requests-reset", "2024-06-10T06:14:00Z")],
            h(s(40), AnthropicReset),
        ),
        (
            &[("anthropic-ratelimit-tokens-reset", "2024-06-10T06:13:21.5Z")],
            h(ms(1500), AnthropicReset),
        ),
        (
            &[(
                "anthropic-ratelimit-input-tokens-reset",
                "2024-06-10T08:13:30+02:00",
            )],
            h(s(10), AnthropicReset),
        ),
        (
            &[(
                "anthropic-ratelimit-output-tokens-reset",
                "2020-01-01T00:00:00Z",
            )],
            h(s(0), AnthropicReset),
        ),
        (&[], None),
    ];
    for (pairs, want) in cases {
        assert_eq!(hint(pairs), *want, "{pairs:?}");
    }
}

#[test]
fn precedence() {
    use HintSource::*;
    let all = [
        ("retry-after-ms", "250"),
        ("retry-after", "3"),
        ("x-ratelimit-reset-requests", "9s"),
        ("anthropic-ratelimit-requests-reset", "2024-06-10T06:14:00Z"),
    ];
    assert_eq!(hint(&all), h(Duration::from_millis(250), RetryAfterMs));
    assert_eq!(hint(&all[1..]), h(Duration::from_secs(3), RetryAfter));
    assert_eq!(hint(&all[2..]), h(Duration::from_secs(9), RateLimitReset));
    assert_eq!(hint(&all[3..]), h(Duration::from_secs(40), AnthropicReset));
    // A garbage higher-precedence header falls through to the next one.
    assert_eq!(
        hint(&[("retry-after-ms", "soon"), ("retry-after", "4")]),
        h(Duration::from_secs(4), RetryAfter)
    );
}

#[test]
fn exhausted_limit_decides_the_reset() {
    let base = [
        ("x-ratelimit-reset-requests", "20ms"),
        ("x-ratelimit-reset-tokens", "6m0s"),
    ];
    // Requests exhausted: wait for the request window, not the (longer) token window.
    let mut pairs = base.to_vec();
    pairs.push(("x-ratelimit-remaining-requests", "0"));
    pairs.push(("x-ratelimit-remaining-tokens", "12000"));
    assert_eq!(hint(&pairs).unwrap().after, Duration::from_millis(20));
    // Nothing known to be exhausted: the longest.
    assert_eq!(hint(&base).unwrap().after, Duration::from_secs(360));
    // Anthropic: tokens exhausted.
    let a = [
        ("anthropic-ratelimit-requests-remaining", "40"),
        ("anthropic-ratelimit-requests-reset", "2024-06-10T06:15:00Z"),
        ("anthropic-ratelimit-tokens-remaining", "0"),
        ("anthropic-ratelimit-tokens-reset", "2024-06-10T06:13:25Z"),
    ];
    assert_eq!(hint(&a).unwrap().after, Duration::from_secs(5));
}

#[test]
fn absurd_values_are_capped() {
    assert_eq!(
        hint(&[("retry-after", "99999999999")]).unwrap().after,
        MAX_HINT
    );
    assert_eq!(hint(&[("retry-after-ms", "1e300")]), None); // not a plain decimal
    assert_eq!(
        hint(&[("x-ratelimit-reset-tokens", "9000h")])
            .unwrap()
            .after,
        MAX_HINT
    );
    assert_eq!(
        hint(&[("retry-after", "Fri, 01 Jan 2100 00:00:00 GMT")])
            .unwrap()
            .after,
        MAX_HINT
    );
}

#[test]
fn garbage_is_ignored() {
    for value in [
        "",
        "-1",
        "NaN",
        "inf",
        "1e3",
        "soon",
        "1.2.3",
        "0x10",
        "  ",
        "Mon, 99 Foo 2024",
        "١٢",
    ] {
        let Ok(v) = http::HeaderValue::from_str(value) else {
            continue;
        };
        let mut hm = HeaderMap::new();
        for name in [
            "retry-after",
            "retry-after-ms",
            "x-ratelimit-reset-requests",
            "anthropic-ratelimit-tokens-reset",
        ] {
            hm.insert(name, v.clone());
        }
        assert_eq!(retry_hint(&hm, now()), None, "{value:?}");
    }
    // Non-UTF-8 header bytes.
    let mut hm = HeaderMap::new();
    hm.insert(
        "retry-after",
        http::HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
    );
    assert_eq!(retry_hint(&hm, now()), None);
    assert_eq!(explicit_retry_hint(&hm, now()), None);
}

#[test]
fn explicit_hint_ignores_reset_headers() {
    let hm = headers(&[("x-ratelimit-reset-tokens", "1s")]);
    assert_eq!(explicit_retry_hint(&hm, now()), None);
}

#[test]
fn go_durations() {
    let d = |s: &str| parse_go_duration(s);
    assert_eq!(d("0"), Some(Duration::ZERO));
    assert_eq!(d("0s"), Some(Duration::ZERO));
    assert_eq!(d("1s"), Some(Duration::from_secs(1)));
    assert_eq!(d("6m0s"), Some(Duration::from_secs(360)));
    assert_eq!(d("20ms"), Some(Duration::from_millis(20)));
    assert_eq!(d("1h30m"), Some(Duration::from_secs(5400)));
    assert_eq!(d("0.5s"), Some(Duration::from_millis(500)));
    assert_eq!(d("1.5h"), Some(Duration::from_secs(5400)));
    assert_eq!(d("2.66s"), Some(Duration::from_millis(2660)));
    assert_eq!(d("300us"), Some(Duration::from_micros(300)));
    assert_eq!(d("300µs"), Some(Duration::from_micros(300)));
    assert_eq!(d("7ns"), Some(Duration::from_nanos(7)));
    assert_eq!(d(".5s"), Some(Duration::from_millis(500)));
    assert_eq!(d("1m1.001s"), Some(Duration::from_millis(61_001)));
    for bad in [
        "",
        "s",
        "1",
        "-1s",
        "1x",
        "1s2",
        "1..5s",
        "9999999999999999999h",
        ".s",
        "1 s",
    ] {
        assert_eq!(d(bad), None, "{bad:?}");
    }
}

#[test]
fn openai_rate_limit_headers() {
    let hm = headers(&[
        ("x-ratelimit-limit-requests", "10000"),
        ("x-ratelimit-limit-tokens", "2000000"),
        ("x-ratelimit-remaining-requests", "9999"),
        ("x-ratelimit-remaining-tokens", "1999000"),
        ("x-ratelimit-reset-requests", "6ms"),
        ("x-ratelimit-reset-tokens", "30ms"),
    ]);
    assert_eq!(
        rate_limit_headers(&hm, now()),
        RateLimitHeaders {
            remaining_requests: Some(9999),
            remaining_tokens: Some(1_999_000),
            reset_requests: Some(Duration::from_millis(6)),
            reset_tokens: Some(Duration::from_millis(30)),
            limit_requests: Some(10_000),
            limit_tokens: Some(2_000_000),
        }
    );
}

#[test]
fn anthropic_rate_limit_headers() {
    let hm = headers(&[
        ("anthropic-ratelimit-requests-limit", "50"),
        ("anthropic-ratelimit-requests-remaining", "49"),
        ("anthropic-ratelimit-requests-reset", "2024-06-10T06:13:21Z"),
        ("anthropic-ratelimit-input-tokens-limit", "40000"),
        ("anthropic-ratelimit-input-tokens-remaining", "39000"),
        (
            "anthropic-ratelimit-input-tokens-reset",
            "2024-06-10T06:13:22Z",
        ),
        ("anthropic-ratelimit-output-tokens-limit", "8000"),
        ("anthropic-ratelimit-output-tokens-remaining", "7000"),
        (
            "anthropic-ratelimit-output-tokens-reset",
            "2024-06-10T06:13:30Z",
        ),
    ]);
    let rl = rate_limit_headers(&hm, now());
    assert_eq!(rl.remaining_requests, Some(49));
    assert_eq!(rl.limit_requests, Some(50));
    assert_eq!(rl.reset_requests, Some(Duration::from_secs(1)));
    // No combined `tokens` headers: the tighter of input and output.
    assert_eq!(rl.remaining_tokens, Some(7000));
    assert_eq!(rl.limit_tokens, Some(8000));
    assert_eq!(rl.reset_tokens, Some(Duration::from_secs(10)));
    // The combined header wins when present.
    let mut hm = hm;
    hm.insert(
        "anthropic-ratelimit-tokens-remaining",
        "123".parse().unwrap(),
    );
    assert_eq!(rate_limit_headers(&hm, now()).remaining_tokens, Some(123));
    assert!(rate_limit_headers(&HeaderMap::new(), now()).is_empty());
}
