//! Telling a failed outcome from a good one.
//!
//! The layers never look at a response themselves: a [`Classify`]
//! implementation turns each outcome into `None` (success) or a
//! [`Classification`] from `keel-policy`, whose class, action and server
//! hint drive the retry, breaker and hedge decisions. Classification lives
//! in exactly one place, and an error nobody recognises is not retried.
//!
//! Ready-made: [`HttpClassifier`] for `http::Response<B>` (status and
//! headers through [`keel_policy::classify_response`]; the body is never
//! read) and any closure `Fn(Result<&Res, &Err>) -> Option<Classification>`.

use std::any::Any;
use std::time::SystemTime;

use keel_policy::{Action, Classification, FailureClass};

use crate::error::{BoxError, Error};

/// Decides whether an outcome of the inner service failed, and how.
///
/// Implement it for a non-HTTP service, or pass a closure:
///
/// ```
/// use keel_policy::{Classification, FailureClass};
/// use keel_tower::Classify;
///
/// /// A service answering `Err("busy")` when overloaded.
/// fn classify(outcome: Result<&String, &&'static str>) -> Option<Classification> {
///     match outcome {
///         Ok(_) => None,
///         Err(&"busy") => Some(Classification::new(FailureClass::Overloaded)),
///         Err(_) => Some(Classification::new(FailureClass::InvalidRequest)),
///     }
/// }
/// assert!(classify.classify(Ok(&"fine".to_string())).is_none());
/// assert_eq!(classify.classify(Err(&"busy")).unwrap().class, FailureClass::Overloaded);
/// ```
pub trait Classify<Res, Err> {
    /// `None` when the outcome is a success, else its classification.
    fn classify(&self, outcome: Result<&Res, &Err>) -> Option<Classification>;
}

impl<F, Res, Err> Classify<Res, Err> for F
where
    F: Fn(Result<&Res, &Err>) -> Option<Classification>,
{
    fn classify(&self, outcome: Result<&Res, &Err>) -> Option<Classification> {
        self(outcome)
    }
}

/// Classifies `http::Response<B>` by status and headers (`Retry-After`,
/// `retry-after-ms`, `x-ratelimit-reset-*`, `anthropic-ratelimit-*-reset`
/// become the retry hint) without reading the body, and errors with
/// [`classify_error`].
///
/// Without the body, a 429 cannot be told apart from an exhausted quota
/// (OpenAI's `insufficient_quota`): both read as rate limited. Classify the
/// body yourself (with [`keel_policy::classify_response`]) when that matters.
///
/// ```
/// use keel_policy::FailureClass;
/// use keel_tower::{Classify, HttpClassifier};
///
/// let ok = http::Response::new(());
/// let busy = http::Response::builder().status(503).header("retry-after", "2").body(()).unwrap();
/// let c = HttpClassifier;
/// assert!(Classify::<_, std::io::Error>::classify(&c, Ok(&ok)).is_none());
/// let verdict = Classify::<_, std::io::Error>::classify(&c, Ok(&busy)).unwrap();
/// assert_eq!(verdict.class, FailureClass::Overloaded);
/// assert_eq!(verdict.hint.unwrap().after, std::time::Duration::from_secs(2));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct HttpClassifier;

impl<B, E: 'static> Classify<http::Response<B>, E> for HttpClassifier {
    fn classify(&self, outcome: Result<&http::Response<B>, &E>) -> Option<Classification> {
        match outcome {
            Ok(res) => keel_policy::classify_response(
                res.status().as_u16(),
                res.headers(),
                b"",
                SystemTime::now(),
            ),
            Err(e) => Some(classify_error(e)),
        }
    }
}

/// Classifies an error of a service that answers with responses (so an
/// error means no response arrived).
///
/// * An [`Error`] of an inner Keel layer: [`Error::Timeout`] is a
///   [`FailureClass::Timeout`] (retried); rejections by the breaker,
///   limiter, bulkhead or budget are not retried (they already are the
///   policy's answer), and carry their wait as the hint.
/// * [`std::io::Error`] of kind `TimedOut` is a timeout.
/// * Anything else is a transport failure, [`FailureClass::Network`]:
///   connection refused or reset, DNS, TLS, a body cut off.
///
/// ```
/// use keel_policy::FailureClass;
/// use keel_tower::{classify_error, Error};
/// use std::time::Duration;
///
/// let timeout = Error::Timeout { after: Duration::from_secs(1) };
/// assert_eq!(classify_error(&timeout).class, FailureClass::Timeout);
/// let open = Error::BreakerOpen { retry_after: Duration::from_secs(5) };
/// assert!(!classify_error(&open).action.retry_same);
/// ```
pub fn classify_error<E: 'static>(err: &E) -> Classification {
    let any: &dyn Any = err;
    let keel = any.downcast_ref::<Error>().or_else(|| {
        any.downcast_ref::<BoxError>()
            .and_then(|b| b.downcast_ref::<Error>())
    });
    if let Some(keel) = keel {
        return classify_keel_error(keel);
    }
    let io = any.downcast_ref::<std::io::Error>().or_else(|| {
        any.downcast_ref::<BoxError>()
            .and_then(|b| b.downcast_ref::<std::io::Error>())
    });
    let class = match io {
        Some(io) if io.kind() == std::io::ErrorKind::TimedOut => FailureClass::Timeout,
        _ => FailureClass::Network,
    };
    Classification::new(class)
}

fn classify_keel_error(err: &Error) -> Classification {
    let rejected = |class: FailureClass| Classification {
        action: Action {
            retry_same: false,
            fall_back: true,
        },
        hint: err.retry_after().map(|after| keel_policy::RetryHint {
            after,
            source: keel_policy::HintSource::RetryAfter,
        }),
        message: Some(err.to_string()),
        ..Classification::new(class)
    };
    match err {
        Error::Timeout { .. } => Classification {
            message: Some(err.to_string()),
            ..Classification::new(FailureClass::Timeout)
        },
        Error::BreakerOpen { .. } | Error::BulkheadFull { .. } | Error::BudgetExhausted(_) => {
            rejected(FailureClass::Overloaded)
        }
        Error::RateLimited { .. } => rejected(FailureClass::RateLimited),
        Error::Inner(inner) => match inner.downcast_ref::<std::io::Error>() {
            Some(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                Classification::new(FailureClass::Timeout)
            }
            _ => Classification::new(FailureClass::Network),
        },
    }
}
