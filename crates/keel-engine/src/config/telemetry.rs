//! `[telemetry]`: where Keel sends its OpenTelemetry traces (see
//! docs/traces.md). Off unless an endpoint is given, in the file or by the
//! standard `OTEL_EXPORTER_OTLP_ENDPOINT` variable; the file's keys win over
//! the `OTEL_*` variables, which fill in what the file leaves out.

use http::{HeaderName, HeaderValue, Uri};
use serde::Deserialize;
use std::collections::BTreeMap;

use super::{ConfigError, Validator};

/// `[telemetry]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTelemetry {
    otlp_endpoint: Option<String>,
    service_name: Option<String>,
    sample_ratio: Option<f64>,
    max_queue_spans: Option<usize>,
    export_timeout: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// Validated `[telemetry]`: traces are exported when this is present.
#[derive(Clone, Debug, PartialEq)]
pub struct Telemetry {
    /// Where spans are POSTed: `{otlp_endpoint}/v1/traces`.
    pub traces_uri: Uri,
    /// `service.name` of Keel's spans (default `keel`).
    pub service_name: String,
    /// Share of traces started by Keel that are recorded (a client's
    /// `traceparent` decides for its own traces).
    pub sample_ratio: f64,
    /// Headers sent with every export (API keys of hosted backends: kept
    /// sensitive, never logged).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Spans waiting for export at most (default 2048); past it, spans
    /// are dropped and counted, never waited for.
    pub max_queue_spans: usize,
    /// How long one export may take (default 10 s).
    pub export_timeout: std::time::Duration,
}

impl Validator<'_> {
    /// `[telemetry]` with the `OTEL_*` variables `env` resolves.
    pub(super) fn telemetry(
        &self,
        raw: &RawTelemetry,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Telemetry>, ConfigError> {
        let from_env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let (endpoint, key) = match (&raw.otlp_endpoint, from_env("OTEL_EXPORTER_OTLP_ENDPOINT")) {
            (Some(e), _) => (e.clone(), "telemetry.otlp_endpoint"),
            (None, Some(e)) => (e, "OTEL_EXPORTER_OTLP_ENDPOINT"),
            (None, None) => return Ok(None),
        };
        let base = endpoint.trim().trim_end_matches('/');
        let traces_uri = format!("{base}/v1/traces")
            .parse::<Uri>()
            .ok()
            .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some())
            .ok_or_else(|| {
                self.invalid(
                    key,
                    "a base URL like \"http://127.0.0.1:4318\"",
                    format!("{endpoint:?}"),
                )
            })?;
        let service_name = raw
            .service_name
            .clone()
            .or_else(|| from_env("OTEL_SERVICE_NAME"))
            .unwrap_or_else(|| "keel".into());
        let sample_ratio = raw.sample_ratio.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&sample_ratio) {
            return Err(self.invalid("telemetry.sample_ratio", "a number in 0..=1", sample_ratio));
        }
        let max_queue_spans = match raw.max_queue_spans {
            Some(n) => n,
            None => match from_env("OTEL_BSP_MAX_QUEUE_SIZE") {
                Some(v) => v.trim().parse().map_err(|_| {
                    self.invalid(
                        "OTEL_BSP_MAX_QUEUE_SIZE",
                        "a number of spans",
                        format!("{v:?}"),
                    )
                })?,
                None => 2048,
            },
        };
        if max_queue_spans == 0 {
            return Err(self.invalid("telemetry.max_queue_spans", "at least 1", 0));
        }
        let export_timeout = match (&raw.export_timeout, from_env("OTEL_EXPORTER_OTLP_TIMEOUT")) {
            (None, Some(ms)) => {
                std::time::Duration::from_millis(ms.trim().parse().map_err(|_| {
                    self.invalid(
                        "OTEL_EXPORTER_OTLP_TIMEOUT",
                        "milliseconds",
                        format!("{ms:?}"),
                    )
                })?)
            }
            (t, _) => self.duration(
                "telemetry.export_timeout",
                t,
                std::time::Duration::from_secs(10),
            )?,
        };
        if export_timeout.is_zero() {
            return Err(self.invalid("telemetry.export_timeout", "a positive duration", "0"));
        }
        let mut headers = Vec::new();
        let mut add = |key: &str, name: &str, value: &str| {
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| self.invalid(key, "a header name", format!("{name:?}")))?;
            let mut value = HeaderValue::from_str(value.trim())
                // The value may be a key: never echoed.
                .map_err(|_| self.invalid(key, "a header value of visible ASCII", "another"))?;
            value.set_sensitive(true);
            headers.retain(|(n, _)| *n != name);
            headers.push((name, value));
            Ok::<_, ConfigError>(())
        };
        // `OTEL_EXPORTER_OTLP_HEADERS`: `k1=v1,k2=v2`, values percent-encoded.
        if let Some(list) = from_env("OTEL_EXPORTER_OTLP_HEADERS") {
            for pair in list.split(',').filter(|p| !p.trim().is_empty()) {
                let (k, v) = pair.split_once('=').ok_or_else(|| {
                    self.invalid(
                        "OTEL_EXPORTER_OTLP_HEADERS",
                        "a list like \"k1=v1,k2=v2\"",
                        "an entry without '='",
                    )
                })?;
                add("OTEL_EXPORTER_OTLP_HEADERS", k, &percent_decode(v))?;
            }
        }
        for (k, v) in &raw.headers {
            add(&format!("telemetry.headers.{k}"), k, v)?;
        }
        Ok(Some(Telemetry {
            traces_uri,
            service_name,
            sample_ratio,
            headers,
            max_queue_spans,
            export_timeout,
        }))
    }
}

/// `%XX` sequences decoded (the W3C baggage encoding of OTLP header values).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn resolve(raw: &str, env: &[(&str, &str)]) -> Result<Option<Telemetry>, ConfigError> {
        let raw: RawTelemetry = toml::from_str(raw).unwrap();
        let env = |k: &str| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        Validator { file: "keel.toml" }.telemetry(&raw, &env)
    }

    #[test]
    fn off_without_an_endpoint() {
        assert_eq!(resolve("", &[]).unwrap(), None);
        assert_eq!(resolve("service_name = \"x\"", &[]).unwrap(), None);
    }

    #[test]
    fn the_file_wins_and_the_environment_fills_in() {
        let t = resolve(
            "otlp_endpoint = \"http://collector:4318/\"\nheaders = { x-api-key = \"k2\" }",
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://other:4318"),
                ("OTEL_SERVICE_NAME", "gateway"),
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    "x-api-key=k1,authorization=Basic%20YWI%3D",
                ),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(t.traces_uri, "http://collector:4318/v1/traces");
        assert_eq!(t.service_name, "gateway");
        assert_eq!(t.sample_ratio, 1.0);
        let h: Vec<(String, &str)> = t
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            h,
            [
                ("authorization".to_string(), "Basic YWI="),
                ("x-api-key".to_string(), "k2")
            ]
        );
        assert!(t.headers.iter().all(|(_, v)| v.is_sensitive()));
    }

    #[test]
    fn the_environment_alone_turns_traces_on() {
        let t = resolve(
            "",
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://api.honeycomb.io")],
        )
        .unwrap()
        .unwrap();
        assert_eq!(t.traces_uri, "https://api.honeycomb.io/v1/traces");
        assert_eq!(t.service_name, "keel");
    }

    #[test]
    fn bad_values_are_named() {
        assert_eq!(
            resolve("otlp_endpoint = \"collector:4318\"", &[]).unwrap_err().to_string(),
            "keel.toml: telemetry.otlp_endpoint: expected a base URL like \"http://127.0.0.1:4318\", got \"collector:4318\""
        );
        assert_eq!(
            resolve("otlp_endpoint = \"http://c:4318\"\nsample_ratio = 1.5", &[])
                .unwrap_err()
                .to_string(),
            "keel.toml: telemetry.sample_ratio: expected a number in 0..=1, got 1.5"
        );
        assert_eq!(
            resolve(
                "otlp_endpoint = \"http://c:4318\"\nheaders = { \"a b\" = \"v\" }",
                &[]
            )
            .unwrap_err()
            .to_string(),
            "keel.toml: telemetry.headers.a b: expected a header name, got \"a b\""
        );
    }
}
