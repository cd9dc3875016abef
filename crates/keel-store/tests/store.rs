//! The store traits against both implementations (same expectations for
//! memory and a real `redis-server`), and the failover facade: Redis
//! killed and restarted, required and optional Redis at start.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use keel_policy::LimitCause;
use keel_store::testing::RedisServer;
use keel_store::{
    BreakerStore, CacheStore, Claim, IdemRecord, IdempotencyStore, LimitSpec, LimitStore,
    MemoryStore, RedisStore, RedisUrl, Shared, Store, StoreConfig, StoreError,
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

#[tokio::test]
async fn memory_store_contract() {
    let s = MemoryStore::new();
    cache_contract(&s).await;
    idempotency_contract(&s).await;
    limit_contract(&s).await;
    breaker_contract(&s).await;
}

#[tokio::test]
async fn redis_store_contract() {
    let server = redis();
    let s = redis_store(&server, "test:").await;
    cache_contract(&s).await;
    idempotency_contract(&s).await;
    limit_contract(&s).await;
    breaker_contract(&s).await;
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
