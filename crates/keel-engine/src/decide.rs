//! Stage 5, *decide*: what the chain does after an attempt, as a pure
//! function of what was observed. No I/O and no locks: the random source,
//! the adaptive backoff scale and the facts that need a lock (is a later
//! deployment available?) are passed in. The stream pump asks the same
//! rules for its follow-ups ([`may_continue`], [`client_cut`], [`may_resume`]).

use std::time::Duration;

use keel_policy::{Backoff, Classification, Delay, DelayReason, GiveUpReason};
use rand::Rng;

use crate::call::ClientApi;
use crate::config::{Deployment, StreamFailure};
use crate::content::{ContentPolicy, RefusalPolicy, TruncationPolicy, Verdict};

/// The chain's next step.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    /// The answer goes to the client, flagged when it is cut or a refusal.
    Accept(Flag),
    /// The same deployment is asked again, as progress rather than a retry.
    FollowUp(FollowUp),
    /// The same deployment is asked again after `delay`.
    Retry {
        delay: Duration,
        reason: DelayReason,
    },
    /// The next deployment is tried.
    FallOver(FallOver),
    /// The refusal is held while the deployments listed for refusals are tried.
    HoldRefusal,
    /// Neither a retry nor another deployment can help: the client's error.
    FailFast,
}

/// How an accepted answer is flagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flag {
    None,
    Truncated,
    Refusal,
}

/// A follow-up on the same deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FollowUp {
    /// Ask for the rest of an answer cut by the output limit.
    Continue,
    /// Ask again with a larger output limit.
    Raise { max_tokens: u32 },
    /// Ask for a fix of invalid structured output.
    Repair,
    /// The key was rate limited: the same request on another key.
    KeySwitch { from: usize, to: usize },
}

/// Why the chain falls over to the next deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FallOver {
    /// Structured output still invalid after the repairs allowed.
    InvalidOutput,
    /// The wait before a retry is longer than `failover_after`, and a later
    /// deployment can serve.
    LongWait {
        delay: Duration,
        reason: DelayReason,
    },
    /// The backoff gave up (attempts, deadline, a hint past the deadline).
    GiveUp(GiveUpReason),
    /// The attempts allowed on this deployment are used.
    Exhausted,
    /// The failure's class calls for another deployment, not a retry.
    Class,
}

/// What decides an answer's fate besides its verdict.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AnswerFacts {
    /// Continuations, repairs and raises already made on this deployment.
    pub continuations: u32,
    pub repairs: u32,
    pub raised: bool,
    /// The answer has tool calls (a cut tool call is not continued).
    pub tools: bool,
    /// The answer was cut by the client's own limit (see [`client_cut`]).
    pub client_cut: bool,
    /// The output limit of the request just sent (0: none).
    pub max_tokens: u32,
    /// The deployment's largest output.
    pub deployment_max: u32,
    /// A deployment after this one may take a refused request.
    pub refusal_fallback: bool,
    /// A refusal is already held.
    pub holding_refusal: bool,
}

/// What decides a failure's fate besides its class.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FailureFacts<'a> {
    pub backoff: &'a Backoff,
    /// The attempt number that failed, counting only retries (1 = first).
    pub attempt: u32,
    /// Attempts allowed per deployment.
    pub per_deployment: u32,
    pub prev_delay: Duration,
    /// Time left before the request's deadline.
    pub time_left: Duration,
    pub failover_after: Duration,
    /// A later deployment of the chain is available.
    pub next_can_serve: bool,
    /// The key to switch to after a rate limit, if the pool has one.
    pub key_switch: Option<(usize, usize)>,
    /// The adaptive backoff's scale.
    pub scale: f64,
}

/// The step after a 200 whose content was judged `verdict`.
pub(crate) fn on_answer(verdict: &Verdict, p: &ContentPolicy, f: &AnswerFacts) -> Step {
    match verdict {
        Verdict::Good | Verdict::Empty => Step::Accept(Flag::None),
        Verdict::Truncated => {
            if p.truncation == TruncationPolicy::Continue
                && may_continue(p, f.continuations, f.tools)
                && !f.client_cut
            {
                return Step::FollowUp(FollowUp::Continue);
            }
            if p.truncation == TruncationPolicy::Raise
                && !f.raised
                && f.max_tokens > 0
                && f.max_tokens < f.deployment_max
            {
                let larger = f.max_tokens.saturating_mul(2).min(f.deployment_max);
                return Step::FollowUp(FollowUp::Raise { max_tokens: larger });
            }
            Step::Accept(Flag::Truncated)
        }
        Verdict::Refusal => {
            if p.refusal == RefusalPolicy::Fallback && f.refusal_fallback && !f.holding_refusal {
                Step::HoldRefusal
            } else {
                Step::Accept(Flag::Refusal)
            }
        }
        Verdict::Invalid(_) if f.repairs < p.max_repairs => Step::FollowUp(FollowUp::Repair),
        Verdict::Invalid(_) => Step::FallOver(FallOver::InvalidOutput),
    }
}

/// The step after a failed attempt (an empty answer counts as one).
pub(crate) fn on_failure(c: &Classification, f: &FailureFacts<'_>, rng: &mut impl Rng) -> Step {
    if let Some((from, to)) = f.key_switch {
        return Step::FollowUp(FollowUp::KeySwitch { from, to });
    }
    if !c.action.retry_same && !c.action.fall_back {
        return Step::FailFast;
    }
    if !(c.action.retry_same && f.attempt < f.per_deployment) {
        return Step::FallOver(if c.action.retry_same {
            FallOver::Exhausted
        } else {
            FallOver::Class
        });
    }
    let delay = f.backoff.next_delay(
        f.attempt,
        f.prev_delay,
        c.hint,
        Some(f.time_left),
        f.scale,
        rng,
    );
    match delay {
        Delay::Wait { delay, reason } if delay > f.failover_after && f.next_can_serve => {
            Step::FallOver(FallOver::LongWait { delay, reason })
        }
        Delay::Wait { delay, reason } => Step::Retry { delay, reason },
        Delay::GiveUp(why) => Step::FallOver(FallOver::GiveUp(why)),
    }
}

/// Whether a `length` finish may be continued: the route continues cut
/// answers and has continuations left (a cut tool call is not continued).
pub(crate) fn may_continue(p: &ContentPolicy, continuations: u32, tools: bool) -> bool {
    p.truncation == TruncationPolicy::Continue && continuations < p.max_continuations && !tools
}

/// Whether an answer cut after `round_output` tokens was cut by the
/// client's own limit (`asked`) rather than the deployment's; such an
/// answer ends there unless the route continues past the client's limit.
pub(crate) fn client_cut(
    p: &ContentPolicy,
    dep: &Deployment,
    api: ClientApi,
    asked: Option<u32>,
    round_output: Option<u32>,
) -> bool {
    !p.continue_past_client_limit
        && crate::content::cut_by_client_limit(
            asked,
            crate::upstream::output_limit(dep.kind, api, asked, dep.max_output_tokens),
            round_output,
        )
}

/// Whether a stream that broke after its first token is resumed on
/// another deployment: the route resumes, fewer than two resumes were
/// made, and the request's deadline has time left.
pub(crate) fn may_resume(
    failure: StreamFailure,
    resumed: u32,
    time_left: Option<Duration>,
) -> bool {
    failure == StreamFailure::Resume && resumed < 2 && time_left.is_some()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;
    use keel_policy::{BackoffConfig, FailureClass, HintSource, RetryHint};
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn policy(truncation: TruncationPolicy, refusal: RefusalPolicy) -> ContentPolicy {
        ContentPolicy {
            truncation,
            refusal,
            max_continuations: 2,
            max_repairs: 1,
            ..ContentPolicy::default()
        }
    }

    fn answer() -> AnswerFacts {
        AnswerFacts {
            continuations: 0,
            repairs: 0,
            raised: false,
            tools: false,
            client_cut: false,
            max_tokens: 100,
            deployment_max: 4096,
            refusal_fallback: true,
            holding_refusal: false,
        }
    }

    #[test]
    fn answers() {
        use FollowUp::*;
        use RefusalPolicy as R;
        use TruncationPolicy as T;
        let invalid = Verdict::Invalid(vec!["not JSON".into()]);
        let a = answer();
        // One row per branch: verdict, policy, facts, step.
        let rows: Vec<(&str, Verdict, ContentPolicy, AnswerFacts, Step)> = vec![
            (
                "good",
                Verdict::Good,
                policy(T::Accept, R::Accept),
                a,
                Step::Accept(Flag::None),
            ),
            (
                "empty is judged before",
                Verdict::Empty,
                policy(T::Accept, R::Accept),
                a,
                Step::Accept(Flag::None),
            ),
            (
                "cut, continue",
                Verdict::Truncated,
                policy(T::Continue, R::Accept),
                a,
                Step::FollowUp(Continue),
            ),
            (
                "cut, continuations used",
                Verdict::Truncated,
                policy(T::Continue, R::Accept),
                AnswerFacts {
                    continuations: 2,
                    ..a
                },
                Step::Accept(Flag::Truncated),
            ),
            (
                "cut tool call",
                Verdict::Truncated,
                policy(T::Continue, R::Accept),
                AnswerFacts { tools: true, ..a },
                Step::Accept(Flag::Truncated),
            ),
            (
                "cut by the client's limit",
                Verdict::Truncated,
                policy(T::Continue, R::Accept),
                AnswerFacts {
                    client_cut: true,
                    ..a
                },
                Step::Accept(Flag::Truncated),
            ),
            (
                "cut, raise",
                Verdict::Truncated,
                policy(T::Raise, R::Accept),
                a,
                Step::FollowUp(Raise { max_tokens: 200 }),
            ),
            (
                "raise capped",
                Verdict::Truncated,
                policy(T::Raise, R::Accept),
                AnswerFacts {
                    max_tokens: 3000,
                    ..a
                },
                Step::FollowUp(Raise { max_tokens: 4096 }),
            ),
            (
                "raised once",
                Verdict::Truncated,
                policy(T::Raise, R::Accept),
                AnswerFacts { raised: true, ..a },
                Step::Accept(Flag::Truncated),
            ),
            (
                "raise without a limit",
                Verdict::Truncated,
                policy(T::Raise, R::Accept),
                AnswerFacts { max_tokens: 0, ..a },
                Step::Accept(Flag::Truncated),
            ),
            (
                "raise at the maximum",
                Verdict::Truncated,
                policy(T::Raise, R::Accept),
                AnswerFacts {
                    max_tokens: 4096,
                    ..a
                },
                Step::Accept(Flag::Truncated),
            ),
            (
                "cut, flag",
                Verdict::Truncated,
                policy(T::Accept, R::Accept),
                a,
                Step::Accept(Flag::Truncated),
            ),
            (
                "refusal, fallback",
                Verdict::Refusal,
                policy(T::Accept, R::Fallback),
                a,
                Step::HoldRefusal,
            ),
            (
                "refusal, none left",
                Verdict::Refusal,
                policy(T::Accept, R::Fallback),
                AnswerFacts {
                    refusal_fallback: false,
                    ..a
                },
                Step::Accept(Flag::Refusal),
            ),
            (
                "refusal, one held",
                Verdict::Refusal,
                policy(T::Accept, R::Fallback),
                AnswerFacts {
                    holding_refusal: true,
                    ..a
                },
                Step::Accept(Flag::Refusal),
            ),
            (
                "refusal, flag",
                Verdict::Refusal,
                policy(T::Accept, R::Accept),
                a,
                Step::Accept(Flag::Refusal),
            ),
            (
                "invalid, repair",
                invalid.clone(),
                policy(T::Accept, R::Accept),
                a,
                Step::FollowUp(Repair),
            ),
            (
                "invalid, repaired",
                invalid,
                policy(T::Accept, R::Accept),
                AnswerFacts { repairs: 1, ..a },
                Step::FallOver(FallOver::InvalidOutput),
            ),
        ];
        for (name, verdict, p, f, want) in rows {
            assert_eq!(on_answer(&verdict, &p, &f), want, "{name}");
        }
    }

    fn failure(class: FailureClass, hint_ms: Option<u64>) -> Classification {
        let mut c = Classification::new(class);
        c.hint = hint_ms.map(|ms| RetryHint {
            after: Duration::from_millis(ms),
            source: HintSource::RetryAfterMs,
        });
        c
    }

    #[test]
    fn failures() {
        let backoff = Backoff::new(BackoffConfig {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
            max_attempts: 3,
            ..BackoffConfig::default()
        })
        .unwrap();
        let f = FailureFacts {
            backoff: &backoff,
            attempt: 1,
            per_deployment: 3,
            prev_delay: Duration::ZERO,
            time_left: Duration::from_secs(30),
            failover_after: Duration::from_secs(5),
            next_can_serve: true,
            key_switch: None,
            scale: 1.0,
        };
        use FailureClass as C;
        let wait = DelayReason::Hint(HintSource::RetryAfterMs);
        let rows: Vec<(&str, Classification, FailureFacts, Step)> = vec![
            (
                "rate limited, another key",
                failure(C::RateLimited, None),
                FailureFacts {
                    key_switch: Some((0, 1)),
                    ..f
                },
                Step::FollowUp(FollowUp::KeySwitch { from: 0, to: 1 }),
            ),
            (
                "not retryable",
                failure(C::InvalidRequest, None),
                f,
                Step::FailFast,
            ),
            (
                "auth: another deployment",
                failure(C::Auth, None),
                f,
                Step::FallOver(FallOver::Class),
            ),
            (
                "attempts used",
                failure(C::ServerError, None),
                FailureFacts { attempt: 3, ..f },
                Step::FallOver(FallOver::Exhausted),
            ),
            (
                "hint within failover_after",
                failure(C::RateLimited, Some(800)),
                f,
                Step::Retry {
                    delay: Duration::from_millis(800),
                    reason: wait,
                },
            ),
            (
                "hint past failover_after",
                failure(C::RateLimited, Some(8000)),
                f,
                Step::FallOver(FallOver::LongWait {
                    delay: Duration::from_millis(8000),
                    reason: wait,
                }),
            ),
            (
                "hint past failover_after, nothing else",
                failure(C::RateLimited, Some(8000)),
                FailureFacts {
                    next_can_serve: false,
                    ..f
                },
                Step::Retry {
                    delay: Duration::from_millis(8000),
                    reason: wait,
                },
            ),
            (
                "hint past the deadline",
                failure(C::RateLimited, Some(8000)),
                FailureFacts {
                    time_left: Duration::from_secs(1),
                    ..f
                },
                Step::FallOver(FallOver::GiveUp(GiveUpReason::HintExceedsDeadline)),
            ),
            (
                "deadline spent",
                failure(C::Overloaded, None),
                FailureFacts {
                    time_left: Duration::ZERO,
                    ..f
                },
                Step::FallOver(FallOver::GiveUp(GiveUpReason::DeadlineExhausted)),
            ),
            (
                "backoff's own limit",
                failure(C::ServerError, None),
                FailureFacts {
                    attempt: 3,
                    per_deployment: 5,
                    ..f
                },
                Step::FallOver(FallOver::GiveUp(GiveUpReason::AttemptsExhausted)),
            ),
        ];
        for (name, c, f, want) in rows {
            let mut rng = StdRng::seed_from_u64(7);
            assert_eq!(on_failure(&c, &f, &mut rng), want, "{name}");
        }
        // A backoff wait: jittered, within the base, from the seeded source.
        let mut rng = StdRng::seed_from_u64(7);
        match on_failure(&failure(C::ServerError, None), &f, &mut rng) {
            Step::Retry {
                delay,
                reason: DelayReason::Backoff,
            } => {
                assert!(delay <= Duration::from_millis(100), "{delay:?}")
            }
            other => panic!("backoff: {other:?}"),
        }
    }

    #[test]
    fn stream_follow_ups() {
        let p = policy(TruncationPolicy::Continue, RefusalPolicy::Accept);
        assert!(may_continue(&p, 1, false));
        assert!(!may_continue(&p, 2, false));
        assert!(!may_continue(&p, 0, true));
        assert!(!may_continue(
            &policy(TruncationPolicy::Accept, RefusalPolicy::Accept),
            0,
            false
        ));
        let left = Some(Duration::from_secs(1));
        assert!(may_resume(StreamFailure::Resume, 1, left));
        assert!(!may_resume(StreamFailure::Resume, 2, left));
        assert!(!may_resume(StreamFailure::Resume, 0, None));
        assert!(!may_resume(StreamFailure::Fail, 0, left));
    }
}
