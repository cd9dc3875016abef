//! `[[tenants]]`: virtual keys. Each tenant authenticates with its own
//! bearer token (given in the file through `${VAR}`, or only as its SHA-256
//! so the file holds no secret), may use some routes, and has its own
//! limits, concurrency and monthly budget. Only the hash is kept in memory.

use std::collections::BTreeMap;

use keel_policy::LimiterConfig;
use serde::Deserialize;

use super::{names, ConfigError, Route, Validator};

/// A validated tenant.
#[derive(Clone, PartialEq)]
pub struct Tenant {
    /// Name (logs, spend, cache partition).
    pub name: String,
    /// SHA-256 of the token.
    pub token_sha256: [u8; 32],
    /// Routes it may call (`None`: all).
    pub routes: Option<Vec<String>>,
    /// Its own requests and tokens per minute.
    pub limits: LimiterConfig,
    /// Monthly budget in USD (`None`: unlimited).
    pub monthly_budget_usd: Option<f64>,
    /// Requests it may have running at once, streams until they end
    /// (`None`: no limit); past it, 429 with `Retry-After`.
    pub max_concurrency: Option<std::num::NonZeroU32>,
}

impl std::fmt::Debug for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenant")
            .field("name", &self.name)
            .field("token_sha256", &"(hidden)")
            .field("routes", &self.routes)
            .field("limits", &self.limits)
            .field("monthly_budget_usd", &self.monthly_budget_usd)
            .field("max_concurrency", &self.max_concurrency)
            .finish()
    }
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTenant {
    name: String,
    token: Option<String>,
    token_sha256: Option<String>,
    routes: Option<Vec<String>>,
    rpm: Option<u32>,
    tpm: Option<u32>,
    monthly_budget_usd: Option<f64>,
    max_concurrency: Option<u32>,
}

/// SHA-256 of a token.
pub(crate) fn hash_token(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Validator<'_> {
    pub(super) fn tenants(
        &self,
        raw: &[RawTenant],
        routes: &BTreeMap<String, Route>,
    ) -> Result<Vec<Tenant>, ConfigError> {
        let mut out: Vec<Tenant> = Vec::new();
        for (n, t) in raw.iter().enumerate() {
            let key = format!("tenants[{n}]");
            if t.name.trim().is_empty() {
                return Err(self.invalid(&format!("{key}.name"), "a non-empty name", "\"\""));
            }
            if out.iter().any(|o| o.name == t.name) {
                return Err(self.invalid(
                    &format!("{key}.name"),
                    "a name no other tenant has",
                    format!("{:?} (duplicate)", t.name),
                ));
            }
            let token_sha256 = match (&t.token, &t.token_sha256) {
                (Some(tok), None) if !tok.is_empty() => hash_token(tok),
                (None, Some(hex)) => parse_hex32(hex).ok_or_else(|| {
                    self.invalid(
                        &format!("{key}.token_sha256"),
                        "64 hex digits (the SHA-256 of the token)",
                        format!("{} characters", hex.len()),
                    )
                })?,
                (Some(_), Some(_)) => {
                    return Err(self.invalid(
                        &format!("{key}.token"),
                        "either token or token_sha256, not both",
                        "both",
                    ))
                }
                _ => {
                    return Err(self.invalid(
                        &format!("{key}.token"),
                        "a token (\"${VAR}\") or token_sha256",
                        "none",
                    ))
                }
            };
            if let Some(other) = out.iter().find(|o| o.token_sha256 == token_sha256) {
                return Err(self.invalid(
                    &format!("{key}.token"),
                    "a token no other tenant has",
                    format!("the token of tenant {:?}", other.name),
                ));
            }
            if let Some(list) = &t.routes {
                for (i, r) in list.iter().enumerate() {
                    if !routes.contains_key(r) {
                        return Err(self.invalid(
                            &format!("{key}.routes[{i}]"),
                            &format!("one of the routes ({})", names(routes.keys())),
                            format!("{r:?}"),
                        ));
                    }
                }
            }
            for (field, v) in [
                ("rpm", t.rpm),
                ("tpm", t.tpm),
                ("max_concurrency", t.max_concurrency),
            ] {
                if v == Some(0) {
                    return Err(self.invalid(
                        &format!("{key}.{field}"),
                        "a positive number (omit for no limit)",
                        0,
                    ));
                }
            }
            if let Some(b) = t.monthly_budget_usd {
                if !(b.is_finite() && b >= 0.0) {
                    return Err(self.invalid(
                        &format!("{key}.monthly_budget_usd"),
                        "an amount >= 0 (USD)",
                        b,
                    ));
                }
            }
            out.push(Tenant {
                name: t.name.clone(),
                token_sha256,
                routes: t.routes.clone(),
                limits: LimiterConfig {
                    rpm: t.rpm,
                    tpm: t.tpm,
                    ..LimiterConfig::default()
                },
                monthly_budget_usd: t.monthly_budget_usd,
                max_concurrency: t.max_concurrency.and_then(std::num::NonZeroU32::new),
            });
        }
        Ok(out)
    }
}
