//! The Redis store: every replica reads and writes the same keys, under a
//! configurable prefix. Whatever must be decided atomically (a limiter
//! booking, a breaker transition, an idempotency claim) is one Lua script,
//! so two replicas can never both take the last slot; time inside the
//! scripts is Redis's own `TIME`, so replicas' clocks need not agree.

use std::time::Duration;

use keel_policy::{LimitCause, LimitDenied};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};

use crate::idempotency::{Claim, IdemRecord};
use crate::spend::SpendSide;
use crate::{
    BreakerStore, CacheStore, IdempotencyStore, LimitSpec, LimitStore, Month, RedisUrl,
    SpendReport, SpendStore, StoreError,
};

/// GCRA over requests and tokens per minute, in microseconds of Redis time.
/// Same arithmetic as `keel_policy::RateLimiter`: a booking may start at
/// `max(now, tat + cost - tolerance)` and moves the TAT to
/// `max(tat, start) + cost`.
const LIMIT_RESERVE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rpm, tpm, tokens = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tol, max_wait = tonumber(ARGV[4]), tonumber(ARGV[5])
local ready, cause = now, 0
local rtat, ttat, rcost, tcost = 0, 0, 0, 0
if rpm > 0 then
  rtat = tonumber(redis.call('GET', KEYS[1]) or '0')
  rcost = 60000000 / rpm
  local r = rtat + rcost - tol
  if r > ready then ready, cause = r, 1 end
end
if tpm > 0 and tokens > 0 then
  ttat = tonumber(redis.call('GET', KEYS[2]) or '0')
  tcost = tokens * 60000000 / tpm
  local r = ttat + tcost - tol
  if r > ready then ready, cause = r, 2 end
end
local wait = math.ceil(ready - now)
if wait > max_wait then return {0, wait, cause} end
if rpm > 0 then
  local nt = math.max(rtat, ready) + rcost
  redis.call('SET', KEYS[1], string.format('%.0f', nt), 'PX', math.ceil((nt - now + tol) / 1000) + 1000)
end
if tpm > 0 and tokens > 0 then
  local nt = math.max(ttat, ready) + tcost
  redis.call('SET', KEYS[2], string.format('%.0f', nt), 'PX', math.ceil((nt - now + tol) / 1000) + 1000)
end
return {1, wait, cause}
"#;

/// Opens a breaker until `now + ARGV[1]` ms, never shortening an open period.
const BREAKER_OPEN: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local open_for = tonumber(ARGV[1])
local untl = now + open_for
if untl > cur then
  redis.call('SET', KEYS[1], string.format('%.0f', untl), 'PX', open_for + 600000)
end
if cur > now then return 0 end
return 1
"#;

/// Closes a breaker whose open period has passed; keeps a newer one.
const BREAKER_CLOSE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
if tonumber(cur) > now then return 0 end
redis.call('DEL', KEYS[1])
return 1
"#;

/// Milliseconds a breaker stays open, or -1.
const BREAKER_OPEN_FOR: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur > now then return cur - now end
return -1
"#;

/// KEYS: record, lock. ARGV: fingerprint, lock ttl ms.
/// Returns {2, fp, body} (completed), {1, fp} (in progress) or {0} (acquired).
const IDEM_CLAIM: &str = r#"
local r = redis.call('HMGET', KEYS[1], 'fp', 'body')
if r[1] then return {2, r[1], r[2]} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0} end
local fp = redis.call('GET', KEYS[2])
if not fp then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  return {0}
end
return {1, fp}
"#;

/// KEYS: record, lock. ARGV: fingerprint, body, ttl ms.
const IDEM_COMPLETE: &str = r#"
redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'body', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('DEL', KEYS[2])
return 1
"#;

/// How long a month's spend hashes outlive the month (the previous month's
/// totals stay readable for reports and invoices).
const SPEND_KEPT_AFTER_MONTH: i64 = 35 * 86_400;

/// How often a waiting duplicate looks at the key again.
const IDEM_POLL: Duration = Duration::from_millis(20);

/// Redis implementation of every store trait. Cheap to clone (one
/// multiplexed connection, reconnected by the connection manager).
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    scripts: std::sync::Arc<Scripts>,
}

struct Scripts {
    limit_reserve: Script,
    breaker_open: Script,
    breaker_close: Script,
    breaker_open_for: Script,
    idem_claim: Script,
    idem_complete: Script,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisStore {
    /// Connects to `url`; fails if the first connection does not succeed
    /// within `connect_timeout`. Keys start with `prefix`.
    pub async fn connect(
        url: &RedisUrl,
        prefix: &str,
        connect_timeout: Duration,
    ) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(url.expose())?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(connect_timeout)
            .set_number_of_retries(1)
            .set_factor(10)
            .set_max_delay(200);
        let conn = tokio::time::timeout(
            connect_timeout + Duration::from_millis(100),
            ConnectionManager::new_with_config(client, cfg),
        )
        .await
        .map_err(|_| StoreError::Timeout(connect_timeout))??;
        Ok(RedisStore {
            conn,
            prefix: prefix.to_string(),
            scripts: std::sync::Arc::new(Scripts {
                limit_reserve: Script::new(LIMIT_RESERVE),
                breaker_open: Script::new(BREAKER_OPEN),
                breaker_close: Script::new(BREAKER_CLOSE),
                breaker_open_for: Script::new(BREAKER_OPEN_FOR),
                idem_claim: Script::new(IDEM_CLAIM),
                idem_complete: Script::new(IDEM_COMPLETE),
            }),
        })
    }

    fn key(&self, kind: &str, key: &str) -> String {
        format!("{}{kind}:{key}", self.prefix)
    }

    /// The hash of one month's spend per tenant or per deployment.
    fn spend_key(&self, month: Month, side: SpendSide) -> String {
        self.key("spend", &format!("{month}:{}", side.as_str()))
    }

    /// `PING`: whether Redis answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut c).await?;
        Ok(())
    }
}

impl CacheStore for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut c = self.conn.clone();
        Ok(c.get(self.key("cache", key)).await?)
    }

    async fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: () = c.pset_ex(self.key("cache", key), value, ms(ttl)).await?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        let n: i64 = c.del(self.key("cache", key)).await?;
        Ok(n > 0)
    }
}

impl IdempotencyStore for RedisStore {
    async fn claim(
        &self,
        key: &str,
        fingerprint: &str,
        lock_ttl: Duration,
    ) -> Result<Claim, StoreError> {
        let mut c = self.conn.clone();
        let v: redis::Value = self
            .scripts
            .idem_claim
            .key(self.key("idem", key))
            .key(self.key("idem-lock", key))
            .arg(fingerprint)
            .arg(ms(lock_ttl))
            .invoke_async(&mut c)
            .await?;
        let corrupt = |reason: &str| StoreError::Corrupt {
            key: key.to_string(),
            reason: reason.to_string(),
        };
        let items: Vec<redis::Value> = redis::from_redis_value(&v)?;
        let tag: i64 = match items.first() {
            Some(t) => redis::from_redis_value(t)?,
            None => return Err(corrupt("empty claim answer")),
        };
        let text = |i: usize| -> Result<Vec<u8>, StoreError> {
            match items.get(i) {
                Some(v) => Ok(redis::from_redis_value(v)?),
                None => Err(corrupt("short claim answer")),
            }
        };
        match tag {
            0 => Ok(Claim::Acquired),
            1 => Ok(Claim::InProgress {
                fingerprint: String::from_utf8_lossy(&text(1)?).into_owned(),
            }),
            2 => Ok(Claim::Completed(IdemRecord {
                fingerprint: String::from_utf8_lossy(&text(1)?).into_owned(),
                response: text(2)?,
            })),
            _ => Err(corrupt("unknown claim tag")),
        }
    }

    async fn complete(
        &self,
        key: &str,
        record: IdemRecord,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: i64 = self
            .scripts
            .idem_complete
            .key(self.key("idem", key))
            .key(self.key("idem-lock", key))
            .arg(record.fingerprint)
            .arg(record.response)
            .arg(ms(ttl))
            .invoke_async(&mut c)
            .await?;
        Ok(())
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: i64 = c.del(self.key("idem-lock", key)).await?;
        Ok(())
    }

    async fn changed(&self, _key: &str, max: Duration) {
        tokio::time::sleep(IDEM_POLL.min(max)).await;
    }
}

impl LimitStore for RedisStore {
    async fn reserve(
        &self,
        key: &str,
        spec: &LimitSpec,
        tokens: u32,
        max_wait: Duration,
    ) -> Result<Result<Duration, LimitDenied>, StoreError> {
        if !spec.is_limited() {
            return Ok(Ok(Duration::ZERO));
        }
        let mut c = self.conn.clone();
        let tolerance_us = (spec.burst_fraction * 60_000_000.0).floor() as u64;
        let (granted, wait_us, cause): (i64, i64, i64) = self
            .scripts
            .limit_reserve
            .key(self.key("limit", &format!("{key}:rpm")))
            .key(self.key("limit", &format!("{key}:tpm")))
            .arg(spec.rpm.unwrap_or(0))
            .arg(spec.tpm.unwrap_or(0))
            .arg(tokens)
            .arg(tolerance_us)
            .arg(u64::try_from(max_wait.as_micros()).unwrap_or(u64::MAX / 2))
            .invoke_async(&mut c)
            .await?;
        let wait = Duration::from_micros(u64::try_from(wait_us).unwrap_or(0));
        if granted == 1 {
            return Ok(Ok(wait));
        }
        Ok(Err(LimitDenied {
            retry_after: wait,
            cause: if cause == 2 {
                LimitCause::Tpm
            } else {
                LimitCause::Rpm
            },
        }))
    }
}

impl BreakerStore for RedisStore {
    async fn open(&self, key: &str, open_for: Duration) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        let v: i64 = self
            .scripts
            .breaker_open
            .key(self.key("breaker", key))
            .arg(ms(open_for))
            .invoke_async(&mut c)
            .await?;
        Ok(v == 1)
    }

    async fn close(&self, key: &str) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        let v: i64 = self
            .scripts
            .breaker_close
            .key(self.key("breaker", key))
            .invoke_async(&mut c)
            .await?;
        Ok(v == 1)
    }

    async fn open_for(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        let mut c = self.conn.clone();
        let v: i64 = self
            .scripts
            .breaker_open_for
            .key(self.key("breaker", key))
            .invoke_async(&mut c)
            .await?;
        Ok((v > 0).then(|| Duration::from_millis(v as u64)))
    }
}

impl SpendStore for RedisStore {
    /// One `MULTI` of `HINCRBYFLOAT`s on the month's two hashes, which
    /// expire five weeks after the month ends.
    async fn add_spend(&self, spend: &SpendReport) -> Result<SpendReport, StoreError> {
        let amounts: Vec<_> = spend.amounts().collect();
        let mut totals = SpendReport::empty(spend.month);
        if amounts.is_empty() {
            return Ok(totals);
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (side, field, usd) in &amounts {
            pipe.cmd("HINCRBYFLOAT")
                .arg(self.spend_key(spend.month, *side))
                .arg(*field)
                .arg(*usd);
        }
        let expire_at = spend.month.next().start_unix() + SPEND_KEPT_AFTER_MONTH;
        for side in [SpendSide::Tenant, SpendSide::Deployment] {
            if amounts.iter().any(|(s, _, _)| *s == side) {
                pipe.cmd("EXPIREAT")
                    .arg(self.spend_key(spend.month, side))
                    .arg(expire_at)
                    .ignore();
            }
        }
        let mut c = self.conn.clone();
        let new: Vec<f64> = pipe.query_async(&mut c).await?;
        if new.len() != amounts.len() {
            return Err(StoreError::Corrupt {
                key: self.spend_key(spend.month, SpendSide::Tenant),
                reason: format!("{} totals for {} amounts", new.len(), amounts.len()),
            });
        }
        for ((side, field, _), v) in amounts.into_iter().zip(new) {
            totals.side_mut(side).insert(field.to_string(), v);
        }
        Ok(totals)
    }

    async fn tenant_spend(&self, month: Month, tenant: &str) -> Result<f64, StoreError> {
        let mut c = self.conn.clone();
        let v: Option<f64> = c
            .hget(self.spend_key(month, SpendSide::Tenant), tenant)
            .await?;
        Ok(v.unwrap_or(0.0))
    }

    async fn spend_report(&self, month: Month) -> Result<SpendReport, StoreError> {
        let mut c = self.conn.clone();
        let (tenants, deployments) = redis::pipe()
            .hgetall(self.spend_key(month, SpendSide::Tenant))
            .hgetall(self.spend_key(month, SpendSide::Deployment))
            .query_async(&mut c)
            .await?;
        Ok(SpendReport {
            month,
            tenants,
            deployments,
        })
    }
}
