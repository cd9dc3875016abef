//! The store traits against both implementations (same expectations for
//! memory and a real `redis-server`), and the failover facade: Redis
//! killed, restarted and paused, required and optional Redis at start.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use keel_policy::LimitCause;
use keel_store::testing::RedisServer;
use keel_store::{
    BreakerStore, CacheStore, Claim, IdemRecord, IdempotencyStore, LimitSpec, LimitStore,
    MemoryStore, Month, RedisStore, RedisUrl, Shared, SpendReport, SpendStore, Store, StoreConfig,
    StoreError,
};

fn redis() -> RedisServer {
    RedisServer::start().expect("redis-server (run scripts/test to install it)")
}

async fn redis_store(server: &RedisServer, prefix: &str) -> RedisStore {
    let url = RedisUrl::parse(&server.url()).unwrap();
    RedisStore::connect(&url, prefix, Duration::from_secs(2))
        .await
        .unwrap()
}

async fn cache_contract<S: CacheStore>(s: &S) {
    assert_eq!(s.get("a").await.unwrap(), None);
    s.put("a", b"one".to_vec(), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(s.get("a").await.unwrap(), Some(b"one".to_vec()));
    s.put("a", b"two".to_vec(), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(s.get("a").await.unwrap(), Some(b"two".to_vec()));
    s.put("short", b"x".to_vec(), Duration::from_millis(30))
        .await
        .unwrap();
    let t0 = Instant::now();
    while s.get("short").await.unwrap().is_some() {
        assert!(t0.elapsed() < Duration::from_secs(5), "entry never expired");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn idempotency_contract<S: IdempotencyStore>(s: &S) {
    let ttl = Duration::from_secs(60);
    assert_eq!(s.claim("k", "fp1", ttl).await.unwrap(), Claim::Acquired);
    assert_eq!(
        s.claim("k", "fp2", ttl).await.unwrap(),
        Claim::InProgress {
            fingerprint: "fp1".into()
        }
    );
    let rec = IdemRecord {
        fingerprint: "fp1".into(),
        response: b"{\"ok\":true}\x00\xff".to_vec(),
    };
    s.complete("k", rec.clone(), ttl).await.unwrap();
    assert_eq!(
        s.claim("k", "fp1", ttl).await.unwrap(),
        Claim::Completed(rec)
    );
    // A released claim can be taken again.
    assert_eq!(s.claim("r", "fp", ttl).await.unwrap(), Claim::Acquired);
    s.release("r").await.unwrap();
    assert_eq!(s.claim("r", "fp", ttl).await.unwrap(), Claim::Acquired);
    // A lapsed claim (crashed holder) can be taken again.
    assert_eq!(
        s.claim("l", "fp", Duration::from_millis(20)).await.unwrap(),
        Claim::Acquired
    );
    let t0 = Instant::now();
    loop {
        match s.claim("l", "fp", ttl).await.unwrap() {
            Claim::Acquired => break,
            Claim::InProgress { .. } => {
                assert!(t0.elapsed() < Duration::from_secs(5));
                s.changed("l", Duration::from_millis(10)).await;
            }
            Claim::Completed(_) => panic!("never completed"),
        }
    }
}

async fn limit_contract<S: LimitStore>(s: &S) {
    // 60 rpm, burst 1/6: 10 at once, the 11th waits one second.
    let spec = LimitSpec {
        rpm: Some(60),
        tpm: None,
        burst_fraction: 1.0 / 6.0,
    };
    for i in 0..10 {
        let w = s
            .reserve("d", &spec, 0, Duration::ZERO)
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("request {i} denied: {e}"));
        assert_eq!(w, Duration::ZERO);
    }
    let denied = s
        .reserve("d", &spec, 0, Duration::ZERO)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(denied.cause, LimitCause::Rpm);
    assert!(
        denied.retry_after > Duration::from_millis(900)
            && denied.retry_after <= Duration::from_secs(1),
        "{:?}",
        denied.retry_after
    );
    let w = s
        .reserve("d", &spec, 0, Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert!(
        w > Duration::from_millis(900) && w <= Duration::from_secs(1),
        "{w:?}"
    );
    // Tokens: 600 tpm, burst 100; 80 then 80 waits for the tpm limit.
    let spec = LimitSpec {
        rpm: None,
        tpm: Some(600),
        burst_fraction: 1.0 / 6.0,
    };
    assert_eq!(
        s.reserve("t", &spec, 80, Duration::ZERO)
            .await
            .unwrap()
            .unwrap(),
        Duration::ZERO
    );
    let denied = s
        .reserve("t", &spec, 80, Duration::ZERO)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(denied.cause, LimitCause::Tpm);
    // Another key has its own budget.
    assert!(s
        .reserve("other", &spec, 80, Duration::ZERO)
        .await
        .unwrap()
        .is_ok());
}

async fn breaker_contract<S: BreakerStore>(s: &S) {
    assert_eq!(s.open_for("b").await.unwrap(), None);
    assert!(s.open("b", Duration::from_secs(30)).await.unwrap());
    assert!(!s.open("b", Duration::from_secs(1)).await.unwrap());
    let left = s.open_for("b").await.unwrap().unwrap();
    assert!(left > Duration::from_secs(28), "never shortened: {left:?}");
    assert!(!s.close("b").await.unwrap(), "an open period is kept");
    assert!(s.open("short", Duration::from_millis(20)).await.unwrap());
    let t0 = Instant::now();
    while s.open_for("short").await.unwrap().is_some() {
        assert!(t0.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(s.close("short").await.unwrap());
    assert!(!s.close("short").await.unwrap());
}

async fn spend_contract<S: SpendStore>(s: &S) {
    // (Redis expires a month's hashes five weeks after it ends.)
    let m = Month::now();
    let next = m.next();
    assert_eq!(s.tenant_spend(m, "a").await.unwrap(), 0.0);
    assert_eq!(s.spend_report(m).await.unwrap(), SpendReport::empty(m));
    for charge in [
        SpendReport::charge(m, Some("a"), "d1", 0.5),
        SpendReport::charge(m, Some("a"), "d2", 0.25),
        SpendReport::charge(m, None, "d1", 1.0),
        SpendReport::charge(next, Some("a"), "d1", 2.0),
        // Not a storable amount: ignored.
        SpendReport::charge(m, Some("a"), "d1", f64::NAN),
        SpendReport::empty(m),
    ] {
        s.add_spend(&charge).await.unwrap();
    }
    let totals = s
        .add_spend(&SpendReport::charge(m, Some("a"), "d2", 0.125))
        .await
        .unwrap();
    assert_eq!(totals.tenants["a"], 0.875);
    assert_eq!(
        totals.deployments.into_iter().collect::<Vec<_>>(),
        [("d2".into(), 0.375)]
    );
    assert_eq!(s.tenant_spend(m, "a").await.unwrap(), 0.875);
    assert_eq!(s.tenant_spend(m, "b").await.unwrap(), 0.0);
    assert_eq!(s.tenant_spend(next, "a").await.unwrap(), 2.0);
    let r = s.spend_report(m).await.unwrap();
    assert_eq!(r.month, m);
    assert_eq!(
        r.tenants.into_iter().collect::<Vec<_>>(),
        [("a".into(), 0.875)]
    );
    assert_eq!(
        r.deployments.into_iter().collect::<Vec<_>>(),
        [("d1".into(), 1.5), ("d2".into(), 0.375)]
    );
    // Many small amounts add up within rounding.
    for _ in 0..1000 {
        s.add_spend(&SpendReport::charge(next, Some("c"), "d1", 0.000_123))
            .await
            .unwrap();
    }
    let c = s.tenant_spend(next, "c").await.unwrap();
    assert!((c - 0.123).abs() < 1e-9, "{c}");
}

#[tokio::test]
async fn memory_store_contract() {
    let s = MemoryStore::new();
    cache_contract(&s).await;
    idempotency_contract(&s).await;
    limit_contract(&s).await;
    breaker_contract(&s).await;
    spend_contract(&s).await;
}

#[tokio::test]
async fn redis_store_contract() {
    let server = redis();
    let s = redis_store(&server, "test:").await;
    cache_contract(&s).await;
    idempotency_contract(&s).await;
    limit_contract(&s).await;
    breaker_contract(&s).await;
    spend_contract(&s).await;
}

#[tokio::test]
async fn redis_spend_hashes_expire_five_weeks_after_their_month() {
    let server = redis();
    let s = redis_store(&server, "exp:").await;
    let m = Month::new(2026, 12).unwrap();
    s.add_spend(&SpendReport::charge(m, Some("t"), "d", 0.5))
        .await
        .unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("exp:*")
        .query_async(&mut c)
        .await
        .unwrap();
    keys.sort();
    assert_eq!(
        keys,
        ["exp:spend:2026-12:deployment", "exp:spend:2026-12:tenant"]
    );
    // 2027-01-01T00:00:00Z plus 35 days.
    let expected = 1_798_761_600 + 35 * 86_400;
    for k in keys {
        let at: i64 = redis::cmd("EXPIRETIME")
            .arg(&k)
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(at, expected, "{k}");
    }
}

#[tokio::test]
async fn redis_keys_are_namespaced_by_prefix() {
    let server = redis();
    let a = redis_store(&server, "fleet-a:").await;
    let b = redis_store(&server, "fleet-b:").await;
    a.put("k", b"a".to_vec(), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(b.get("k").await.unwrap(), None);
    assert!(a.open("dep", Duration::from_secs(60)).await.unwrap());
    assert_eq!(b.open_for("dep").await.unwrap(), None);
}

#[tokio::test]
async fn two_replicas_share_one_limit() {
    let server = redis();
    let a = redis_store(&server, "p:").await;
    let b = redis_store(&server, "p:").await;
    let spec = LimitSpec {
        rpm: Some(60),
        tpm: None,
        burst_fraction: 1.0 / 6.0,
    };
    let mut granted = 0;
    for i in 0..40 {
        let s = if i % 2 == 0 { &a } else { &b };
        if s.reserve("d", &spec, 0, Duration::ZERO)
            .await
            .unwrap()
            .is_ok()
        {
            granted += 1;
        }
    }
    assert_eq!(granted, 10, "the burst is shared, not doubled");
}

#[tokio::test]
async fn two_replicas_share_spend() {
    let server = redis();
    let a = redis_store(&server, "p:").await;
    let b = redis_store(&server, "p:").await;
    let m = Month::now();
    for i in 0..100 {
        let s = if i % 2 == 0 { &a } else { &b };
        s.add_spend(&SpendReport::charge(m, Some("t"), "d", 0.01))
            .await
            .unwrap();
    }
    let (ra, rb) = (
        a.spend_report(m).await.unwrap(),
        b.spend_report(m).await.unwrap(),
    );
    assert_eq!(ra, rb);
    assert!((ra.tenants["t"] - 1.0).abs() < 1e-9, "{ra:?}");
}

fn cfg(server: Option<&RedisServer>, required: bool) -> StoreConfig {
    StoreConfig {
        redis: server.map(|s| RedisUrl::parse(&s.url()).unwrap()),
        prefix: "keel-test:".into(),
        required,
        timeout: Duration::from_millis(200),
    }
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(10), "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn redis_killed_mid_run_falls_back_to_local_state_and_reconnects() {
    let mut server = redis();
    let store = Store::connect(&cfg(Some(&server), true)).await.unwrap();
    assert!(store.is_up());
    let spec = LimitSpec {
        rpm: Some(60),
        tpm: None,
        burst_fraction: 1.0 / 6.0,
    };
    assert!(matches!(
        store.limit_reserve("d", &spec, 0, Duration::ZERO).await,
        Shared::Redis(Ok(_))
    ));

    server.kill();
    // The first operation after the kill notices; later ones go local at once.
    let _ = store.limit_reserve("d", &spec, 0, Duration::ZERO).await;
    assert!(!store.is_up());
    assert_eq!(
        store.limit_reserve("d", &spec, 0, Duration::ZERO).await,
        Shared::Local
    );
    // Cache and idempotency keep working on memory.
    store
        .cache_put("c", b"v".to_vec(), Duration::from_secs(60))
        .await;
    assert_eq!(store.cache_get("c").await, Some(b"v".to_vec()));
    assert_eq!(
        store.idem_claim("i", "fp", Duration::from_secs(5)).await,
        Claim::Acquired
    );
    let stats = store.stats();
    assert_eq!(stats.backend, "redis");
    assert!(!stats.redis_up);
    assert_eq!(stats.redis_down_transitions, 1);
    assert!(stats.local_fallbacks >= 2, "{stats:?}");

    server.restart().unwrap();
    until("reconnect", || store.is_up()).await;
    assert!(matches!(
        store.limit_reserve("d", &spec, 0, Duration::ZERO).await,
        Shared::Redis(Ok(_))
    ));
    assert_eq!(store.stats().redis_down_transitions, 1);
}

#[tokio::test]
async fn required_redis_unreachable_at_start_is_an_error() {
    let mut server = redis();
    let url = server.url();
    server.kill();
    let err = match Store::connect(&cfg(Some(&server), true)).await {
        Ok(_) => panic!("started without redis"),
        Err(e) => e,
    };
    assert!(matches!(err, StoreError::Unreachable { .. }));
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("[store] redis at {url} is unreachable: ")),
        "{msg}"
    );
    assert!(
        msg.ends_with("(set [store] required = false to start on local state)"),
        "{msg}"
    );
}

#[tokio::test]
async fn optional_redis_starts_local_and_connects_when_it_appears() {
    let mut server = redis();
    server.kill();
    let store = Store::connect(&cfg(Some(&server), false)).await.unwrap();
    assert!(!store.is_up());
    store
        .cache_put("c", b"v".to_vec(), Duration::from_secs(60))
        .await;
    assert_eq!(store.cache_get("c").await, Some(b"v".to_vec()));
    server.restart().unwrap();
    until("connect", || store.is_up()).await;
    let spec = LimitSpec {
        rpm: Some(1),
        tpm: None,
        burst_fraction: 1.0,
    };
    assert!(matches!(
        store.limit_reserve("d", &spec, 0, Duration::ZERO).await,
        Shared::Redis(Ok(_))
    ));
}

#[tokio::test]
async fn memory_only_store_decides_nothing_shared() {
    let store = Store::connect(&StoreConfig::default()).await.unwrap();
    assert!(!store.is_shared());
    let spec = LimitSpec {
        rpm: Some(1),
        tpm: None,
        burst_fraction: 1.0,
    };
    assert_eq!(
        store.limit_reserve("d", &spec, 0, Duration::ZERO).await,
        Shared::Local
    );
    assert_eq!(
        store.breaker_open("d", Duration::from_secs(1)).await,
        Shared::Local
    );
    assert_eq!(store.stats().backend, "memory");
}

#[tokio::test]
async fn spend_written_while_redis_is_away_is_kept_and_sent_later() {
    let mut server = redis();
    let a = Store::connect(&cfg(Some(&server), true)).await.unwrap();
    let b = Store::connect(&cfg(Some(&server), true)).await.unwrap();
    let m = Month::now();
    a.spend_add(SpendReport::charge(m, Some("t"), "d", 0.5))
        .await;
    assert_eq!(b.tenant_spend(m, "t").await, 0.5);

    server.kill();
    let fallbacks = a.stats().local_fallbacks;
    a.spend_add(SpendReport::charge(m, Some("t"), "d", 0.25))
        .await;
    assert!(!a.is_up());
    assert!(a.stats().local_fallbacks > fallbacks);
    // The last fleet total seen, plus what A could not write.
    assert_eq!(a.tenant_spend(m, "t").await, 0.75);
    assert_eq!(b.tenant_spend(m, "t").await, 0.5);
    assert_eq!(a.spend_report(m).await.deployments["d"], 0.75);

    // Redis comes back empty: A's next charge carries the kept 0.25 along.
    server.restart().unwrap();
    until("reconnect", || a.is_up()).await;
    a.spend_add(SpendReport::charge(m, Some("t"), "d", 0.125))
        .await;
    assert_eq!(a.tenant_spend(m, "t").await, 0.375);
    until("b reconnects", || b.is_up()).await;
    assert_eq!(b.tenant_spend(m, "t").await, 0.375);
    assert_eq!(b.spend_report(m).await, a.spend_report(m).await);
}

#[tokio::test]
async fn paused_redis_delays_spend_by_at_most_the_timeout() {
    let server = redis();
    let store = Store::connect(&cfg(Some(&server), true)).await.unwrap();
    let m = Month::now();
    store
        .spend_add(SpendReport::charge(m, Some("t"), "d", 0.5))
        .await;
    assert_eq!(store.tenant_spend(m, "t").await, 0.5);

    // Every client of this Redis stalls for 3 s.
    let client = redis::Client::open(server.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(3000)
        .arg("ALL")
        .query_async(&mut c)
        .await
        .unwrap();
    let t0 = Instant::now();
    store
        .spend_add(SpendReport::charge(m, Some("t"), "d", 0.25))
        .await;
    let spent = store.tenant_spend(m, "t").await;
    let took = t0.elapsed();
    assert_eq!(spent, 0.75);
    // The timeout is 200 ms; the second call answers locally at once.
    assert!(took < Duration::from_millis(600), "{took:?}");
    assert!(!store.is_up());
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query_async(&mut c)
        .await
        .unwrap();
}
