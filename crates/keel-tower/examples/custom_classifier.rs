//! Run with: cargo run -p keel-tower --example custom_classifier
//!
//! Keel's layers around a service that is not HTTP at all: an in-process
//! "inventory lookup" that is sometimes busy. A closure classifies its
//! outcomes; the retry layer retries `Busy`, never `NotFound`, and the
//! circuit breaker opens when the service keeps failing.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_policy::{
    Backoff, BackoffConfig, BackoffKind, BreakerConfig, BreakerMode, Classification, FailureClass,
};
use keel_tower::{classify_error, BoxError, Budget, CircuitBreakerLayer, Error, RetryLayer};
use tower::{service_fn, ServiceBuilder, ServiceExt};

/// Errors of the lookup service.
#[derive(Debug, thiserror::Error)]
enum LookupError {
    #[error("busy")]
    Busy,
    #[error("no such item")]
    NotFound,
}

/// The one place that says what a failure means.
fn classify(outcome: Result<&u32, &LookupError>) -> Option<Classification> {
    match outcome {
        Ok(_) => None,
        Err(LookupError::Busy) => Some(Classification::new(FailureClass::Overloaded)),
        Err(LookupError::NotFound) => Some(Classification::new(FailureClass::InvalidRequest)),
    }
}

/// The retry layer sits outside the breaker, so it sees the lookup's errors
/// wrapped in [`Error::Inner`], and the breaker's own rejections.
fn classify_through_breaker(outcome: Result<&u32, &Error>) -> Option<Classification> {
    match outcome {
        Ok(_) => None,
        Err(Error::Inner(inner)) => match inner.downcast_ref::<LookupError>() {
            Some(e) => classify(Err(e)),
            None => Some(Classification::new(FailureClass::InvalidRequest)),
        },
        Err(keel) => Some(classify_error(keel)),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    // Busy on every other call; item 0 does not exist.
    let lookup = service_fn(move |item: u32| {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        async move {
            match (item, n % 2) {
                (0, _) => Err(LookupError::NotFound),
                (_, 0) => Err(LookupError::Busy),
                _ => Ok(item * 10),
            }
        }
    });

    let backoff = Backoff::new(BackoffConfig {
        kind: BackoffKind::Exponential,
        base: Duration::from_millis(10),
        cap: Duration::from_millis(100),
        max_attempts: 3,
    })?;
    let breaker = CircuitBreakerLayer::new(BreakerConfig {
        mode: BreakerMode::ConsecutiveFailures { threshold: 5 },
        counted: vec![FailureClass::Overloaded],
        ..BreakerConfig::default()
    })?
    .classify_with(classify);
    let service = ServiceBuilder::new()
        .layer(
            RetryLayer::new(backoff)
                .budget(Budget::unlimited())
                .classify_with(classify_through_breaker),
        )
        .layer(breaker.clone())
        .service(lookup);

    for item in [1, 2, 0, 3] {
        match service.clone().oneshot(item).await {
            Ok(stock) => println!("item {item}: {stock} in stock"),
            Err(e) => println!("item {item}: {e}"),
        }
    }
    println!(
        "{} calls reached the service; breaker {:?}",
        calls.load(Ordering::Relaxed),
        breaker.state()
    );
    Ok(())
}
