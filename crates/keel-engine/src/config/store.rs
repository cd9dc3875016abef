//! `[store]` (where shared state lives), `[cache]` (defaults of the
//! response cache) and the per-route `cache_ttl` / `stale_ttl`, in the same
//! raw-then-validated shape as the rest of the config.

use std::time::Duration;

use keel_store::{RedisUrl, StoreConfig};
use serde::Deserialize;

use super::{ConfigError, Validator};

/// The response cache of a route: on when a TTL is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CachePolicy {
    /// How long an answer is served as fresh.
    pub ttl: Duration,
    /// How long after that it may still be served when every deployment
    /// fails (stale-if-error).
    pub stale_ttl: Duration,
}

/// `[store]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    redis: Option<String>,
    prefix: Option<String>,
    required: Option<bool>,
    timeout: Option<String>,
    idempotency_ttl: Option<String>,
}

/// `[cache]`: defaults for every route.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    ttl: Option<String>,
    stale_ttl: Option<String>,
}

/// Validated `[store]` with the idempotency record lifetime.
pub(super) struct ValidStore {
    pub store: StoreConfig,
    pub idempotency_ttl: Duration,
}

impl Validator<'_> {
    pub(super) fn store(&self, s: &RawStore) -> Result<ValidStore, ConfigError> {
        let d = StoreConfig::default();
        let redis = match &s.redis {
            None => None,
            Some(text) => Some(RedisUrl::parse(text).map_err(|reason| {
                self.invalid(
                    "store.redis",
                    &format!("a URL like \"redis://127.0.0.1:6379/0\" ({reason})"),
                    format!("{text:?}"),
                )
            })?),
        };
        let timeout = self.duration("store.timeout", &s.timeout, d.timeout)?;
        if timeout.is_zero() {
            return Err(self.invalid("store.timeout", "a positive duration", "0s"));
        }
        let idempotency_ttl = self.duration(
            "store.idempotency_ttl",
            &s.idempotency_ttl,
            Duration::from_secs(24 * 3600),
        )?;
        if idempotency_ttl.is_zero() {
            return Err(self.invalid("store.idempotency_ttl", "a positive duration", "0s"));
        }
        Ok(ValidStore {
            store: StoreConfig {
                redis,
                prefix: s.prefix.clone().unwrap_or(d.prefix),
                required: s.required.unwrap_or(d.required),
                timeout,
            },
            idempotency_ttl,
        })
    }

    /// The cache policy of a route: its own TTLs over the `[cache]` defaults.
    pub(super) fn route_cache(
        &self,
        key: &str,
        ttl: &Option<String>,
        stale_ttl: &Option<String>,
        defaults: &RawCache,
    ) -> Result<Option<CachePolicy>, ConfigError> {
        let (ttl_key, ttl_raw) = match ttl {
            Some(_) => (format!("{key}.cache_ttl"), ttl),
            None => ("cache.ttl".to_string(), &defaults.ttl),
        };
        let (stale_key, stale_raw) = match stale_ttl {
            Some(_) => (format!("{key}.stale_ttl"), stale_ttl),
            None => ("cache.stale_ttl".to_string(), &defaults.stale_ttl),
        };
        let stale = self.duration(&stale_key, stale_raw, Duration::ZERO)?;
        if ttl_raw.is_none() {
            if stale_ttl.is_some() {
                return Err(self.invalid(
                    &format!("{key}.cache_ttl"),
                    "a cache TTL when stale_ttl is set",
                    "none",
                ));
            }
            return Ok(None);
        }
        let ttl = self.duration(&ttl_key, ttl_raw, Duration::ZERO)?;
        if ttl.is_zero() {
            return Ok(None);
        }
        Ok(Some(CachePolicy {
            ttl,
            stale_ttl: stale,
        }))
    }
}
