//! Keel's resilience policies as [`tower`] layers, for a Rust service that
//! wants them in its own binary rather than behind a gateway.
//!
//! | layer | service | decides | rejection |
//! |---|---|---|---|
//! | [`RetryLayer`] | [`Retry`] | [`keel_policy::Backoff`], [`Budget`], server hints | [`Error::BudgetExhausted`], [`Error::Timeout`] (deadline) |
//! | [`CircuitBreakerLayer`] | [`Breaker`] | [`keel_policy::CircuitBreaker`] | [`Error::BreakerOpen`] |
//! | [`RateLimitLayer`] | [`RateLimit`] | [`keel_policy::RateLimiter`] (RPM/TPM) | [`Error::RateLimited`] |
//! | [`BulkheadLayer`] | [`Bulkhead`] | [`keel_policy::Bulkhead`] | [`Error::BulkheadFull`] |
//! | [`HedgeLayer`] | [`Hedge`] | [`keel_policy::HedgePolicy`], [`Budget`] | (none) |
//! | [`TimeoutLayer`] | [`Timeout`] | a fixed duration | [`Error::Timeout`] |
//!
//! The layers are thin: every decision is made by a pure state machine of
//! `keel-policy`; a layer only sleeps (on `tokio::time`, so paused-time
//! tests work), calls the inner service and records the outcome. They are
//! generic over the request and response types; what counts as a failure is
//! said by a [`Classify`] implementation, [`HttpClassifier`] for
//! `http::Response<B>` by default. Every layer fails with the one flat
//! [`Error`] enum (an inner Keel layer's error is passed through, not
//! nested).
//!
//! # Quick start
//!
//! A retrying, rate-limited, circuit-broken HTTP client:
//!
//! ```
//! use std::time::Duration;
//! use keel_policy::{Backoff, BackoffConfig, BreakerConfig, LimiterConfig};
//! use keel_tower::{CircuitBreakerLayer, RateLimitLayer, RetryLayer, TimeoutLayer};
//! use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Any `Service<Request> -> http::Response<_>`; here, a stand-in.
//! let http = service_fn(|_req: http::Request<String>| async {
//!     Ok::<_, std::io::Error>(http::Response::new("hello".to_string()))
//! });
//! let mut client = ServiceBuilder::new()
//!     .layer(RetryLayer::new(Backoff::new(BackoffConfig::default())?).deadline(Duration::from_secs(60)))
//!     .layer(CircuitBreakerLayer::new(BreakerConfig::default())?)
//!     .layer(RateLimitLayer::new(LimiterConfig { rpm: Some(500), ..LimiterConfig::default() })?)
//!     .layer(TimeoutLayer::new(Duration::from_secs(30)))
//!     .service(http);
//! let response = client.ready().await?.call(http::Request::new("hi".into())).await?;
//! assert_eq!(response.body(), "hello");
//! # Ok(()) }
//! ```
//!
//! A rejection tells you why and for how long:
//!
//! ```
//! # fn handle(err: keel_tower::Error) {
//! match err {
//!     keel_tower::Error::BreakerOpen { retry_after } => eprintln!("down; back in {retry_after:?}"),
//!     keel_tower::Error::RateLimited { retry_after, cause } => eprintln!("{cause:?}: wait {retry_after:?}"),
//!     other => eprintln!("{other}"),
//! }
//! # }
//! ```
//!
//! # Choosing a backoff
//!
//! [`keel_policy::BackoffKind`] has six shapes; the server's hint
//! (`Retry-After`, `retry-after-ms`, `x-ratelimit-reset-*`) always wins over
//! the formula, and `max_attempts` counts the first attempt.
//!
//! * **`FullJitter`** (the default): uniform in `[0, base * 2^n]`. Many
//!   clients failing together spread their retries out instead of coming
//!   back as a herd. Use it unless you have a reason not to.
//! * **`EqualJitter`**: half fixed, half random; never retries almost
//!   immediately, still spreads.
//! * **`Decorrelated`**: each delay drawn from `[base, 3 * previous]`; good
//!   for long outages with many clients.
//! * **`Exponential`** / **`Fixed`** / **`Immediate`**: deterministic; for a
//!   single client, for tests, or for an in-process service where a fast
//!   retry is cheap.
//!
//! Keep `cap` below your deadline, and a [`Budget`] on every retry layer:
//! `max_attempts` bounds one request, the budget bounds the whole fleet's
//! extra load (20% by default) when everything fails at once.
//!
//! ```
//! use keel_policy::{Backoff, BackoffConfig, BackoffKind};
//! use std::time::Duration;
//! let backoff = Backoff::new(BackoffConfig {
//!     kind: BackoffKind::Decorrelated,
//!     base: Duration::from_millis(100),
//!     cap: Duration::from_secs(5),
//!     max_attempts: 4,
//! })?;
//! # let _ = backoff;
//! # Ok::<(), keel_policy::PolicyError>(())
//! ```
//!
//! # Composing layers
//!
//! `ServiceBuilder` applies the first layer outermost. The order that works,
//! from the caller inwards:
//!
//! 1. [`RetryLayer`] with a `deadline`: one deadline for the whole request.
//! 2. [`HedgeLayer`]: hedges per attempt; give it the retry layer's
//!    [`Budget`] and `record_requests(false)` so hedges and retries share
//!    one allowance.
//! 3. [`CircuitBreakerLayer`]: sees every attempt, so it trips on real
//!    failures; when it is open the retry layer does not retry (its
//!    rejection is the answer, with `retry_after`).
//! 4. [`RateLimitLayer`] and [`BulkheadLayer`]: closest to the service, so
//!    retries and hedges are limited too.
//! 5. [`TimeoutLayer`]: per attempt; a timed-out attempt is retried while the
//!    deadline allows (timeout with deadline).
//!
//! ```
//! use std::time::Duration;
//! use keel_policy::{Backoff, BackoffConfig, BreakerConfig, HedgePolicy};
//! use keel_tower::{Budget, BulkheadLayer, CircuitBreakerLayer, HedgeLayer, RetryLayer, TimeoutLayer};
//! use tower::{service_fn, ServiceBuilder};
//!
//! # fn main() -> Result<(), keel_policy::PolicyError> {
//! let budget = Budget::default();
//! let svc = ServiceBuilder::new()
//!     .layer(RetryLayer::new(Backoff::new(BackoffConfig::default())?)
//!         .budget(budget.clone())
//!         .deadline(Duration::from_secs(20)))
//!     .layer(HedgeLayer::new(HedgePolicy::default(), budget).record_requests(false))
//!     .layer(CircuitBreakerLayer::new(BreakerConfig::default())?)
//!     .layer(BulkheadLayer::new(100)?)
//!     .layer(TimeoutLayer::new(Duration::from_secs(5)))
//!     .service(service_fn(|_: http::Request<()>| async {
//!         Ok::<_, std::io::Error>(http::Response::new(()))
//!     }));
//! # let _ = svc; Ok(()) }
//! ```
//!
//! For a service that is not HTTP, implement [`Classify`] (or pass a
//! closure) and give it to each layer with `classify_with`; say `None` for
//! a success, and for a failure a [`keel_policy::Classification`] whose
//! `action.retry_same` says whether another try may help. Unknown failures
//! should not be retried.
//!
//! # Testing with the chaos server
//!
//! `keel-chaos` is a fake OpenAI/Anthropic upstream that fails on command
//! (429 with `Retry-After`, 5xx, hangs, resets...), deterministically for a
//! seed, and counts what it saw. Start it in-process on port 0, point your
//! stack at it, and assert on the attempts it counted:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use keel_chaos::{ChaosServer, Scenario};
//! let scenario = Scenario::from_toml_str(
//!     "[[upstream]]\nname = \"a\"\nkind = \"openai\"\n\
//!      [[upstream.fault]]\nkind = \"server_error\"\nsequence = [1, 2]\n",
//!     "test.toml",
//! )?;
//! let chaos = ChaosServer::start(scenario, 42, "127.0.0.1:0".parse()?).await?;
//! let url = format!("{}/chat/completions", chaos.base_url("a"));
//! // ... send a request to `url` through your layered client ...
//! # let _ = url;
//! assert_eq!(chaos.stats("a").map(|s| s.attempts), Some(3)); // two failures, one success
//! chaos.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! For unit tests, `tower-test` mocks with `#[tokio::test(start_paused =
//! true)]` run backoffs, limiter waits and timeouts in virtual time (see
//! this crate's `tests/`). The runnable example
//! `cargo run -p keel-tower --example chaos_client` does the above end to end.

pub mod breaker;
pub mod budget;
pub mod bulkhead;
pub mod classify;
pub mod error;
pub mod hedge;
pub mod rate_limit;
pub mod retry;
pub mod timeout;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

pub use breaker::{Breaker, CircuitBreakerLayer};
pub use budget::Budget;
pub use bulkhead::{Bulkhead, BulkheadLayer};
pub use classify::{classify_error, Classify, HttpClassifier};
pub use error::{BoxError, Error};
pub use hedge::{Hedge, HedgeLayer};
pub use rate_limit::{NoTokens, RateLimit, RateLimitLayer, TokenCost};
pub use retry::{Retry, RetryLayer};
pub use timeout::{Timeout, TimeoutLayer};

/// The future of every service in this crate.
pub type ResponseFuture<T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'static>>;

/// Now on tokio's clock, so `#[tokio::test(start_paused = true)]` drives
/// every policy.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Policy state is plain counters; a panic elsewhere leaves it usable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
