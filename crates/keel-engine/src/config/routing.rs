//! Per-route routing keys (`strategy`, `weights`, `rules`, `learned`,
//! `decay`) and hedging (`hedge`, `hedge_after`), validated into types the
//! router can use without checking anything again.

use std::collections::BTreeMap;
use std::time::Duration;

use keel_policy::HedgePolicy;
use serde::Deserialize;

use super::{names, ConfigError, RawRoute, Validator};

/// How a route orders its chain for each request (docs/design.md §7). Fallback
/// (docs/design.md §4) applies after the order is chosen.
#[derive(Clone, Debug, PartialEq)]
pub enum RouteStrategy {
    /// The configured order.
    Priority,
    /// A random order drawn by weight: `(deployment index, weight)`.
    Weighted(Vec<(usize, f64)>),
    /// Fewest requests in flight first.
    LeastBusy,
    /// Lowest peak-EWMA latency (times in flight), power of two choices.
    LeastLatency,
    /// Cheapest estimated cost first.
    Cost,
    /// The first matching rule's sub-chain; the route chain when none matches.
    Rules(Vec<Rule>),
    /// Thompson sampling on success, latency and cost.
    Learned(LearnedConfig),
}

impl RouteStrategy {
    /// The config spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            RouteStrategy::Priority => "priority",
            RouteStrategy::Weighted(_) => "weighted",
            RouteStrategy::LeastBusy => "least-busy",
            RouteStrategy::LeastLatency => "least-latency",
            RouteStrategy::Cost => "cost",
            RouteStrategy::Rules(_) => "rules",
            RouteStrategy::Learned(_) => "learned",
        }
    }
}

/// One `[[routes.X.rules]]` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// What the request must look like (every set condition must hold).
    pub when: RuleMatch,
    /// Deployment indices tried, in order, when it matches.
    pub chain: Vec<usize>,
}

/// Conditions of a rule; `None` means "any".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuleMatch {
    /// Estimated prompt tokens at least this.
    pub min_prompt_tokens: Option<u32>,
    /// Estimated prompt tokens at most this.
    pub max_prompt_tokens: Option<u32>,
    /// The request has (or has not) tools.
    pub tools: Option<bool>,
    /// The request has (or has not) a `response_format`.
    pub response_format: Option<bool>,
    /// The request has (or has not) images.
    pub images: Option<bool>,
    /// A request header (lowercase name) that must be present ...
    pub header: Option<String>,
    /// ... with this value, when set.
    pub header_value: Option<String>,
}

/// `learned = { ... }`: the reward of the bandit and its exploration.
#[derive(Clone, Debug, PartialEq)]
pub struct LearnedConfig {
    /// Weight of the success rate in the reward.
    pub success_weight: f64,
    /// Weight of the latency score (`target / (target + latency)`).
    pub latency_weight: f64,
    /// Weight of the cost score (cheapest / this deployment's price).
    pub cost_weight: f64,
    /// Latency at which the latency score is 0.5.
    pub latency_target: Duration,
    /// Share of requests whose first deployment is drawn uniformly (floor of exploration).
    pub exploration: f64,
}

/// Routing of a route: its strategy and how fast observations fade.
#[derive(Clone, Debug, PartialEq)]
pub struct Routing {
    /// The strategy.
    pub strategy: RouteStrategy,
    /// Time constant after which an idle deployment's latency and learned
    /// statistics have faded to 1/e, so a recovered deployment is tried again.
    pub decay: Duration,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    #[serde(default)]
    when: RawWhen,
    chain: Vec<String>,
}

#[derive(Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
struct RawWhen {
    min_prompt_tokens: Option<u32>,
    max_prompt_tokens: Option<u32>,
    tools: Option<bool>,
    response_format: Option<bool>,
    images: Option<bool>,
    header: Option<String>,
    header_value: Option<String>,
}

#[derive(Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLearned {
    success: Option<f64>,
    latency: Option<f64>,
    cost: Option<f64>,
    latency_target: Option<String>,
    exploration: Option<f64>,
}

const STRATEGIES: &str =
    "one of priority, weighted, least-busy, least-latency, cost, rules, learned";

impl Validator<'_> {
    pub(super) fn routing(
        &self,
        key: &str,
        r: &RawRoute,
        chain: &[usize],
        index_of: &BTreeMap<String, usize>,
    ) -> Result<Routing, ConfigError> {
        let implied = if !r.rules.is_empty() {
            "rules"
        } else if r.weights.is_some() {
            "weighted"
        } else if r.learned.is_some() {
            "learned"
        } else {
            "priority"
        };
        let name = r.strategy.as_deref().unwrap_or(implied);
        let only_with = |field: &str, present: bool, strategy: &str| {
            if present && name != strategy {
                Err(self.invalid(
                    &format!("{key}.{field}"),
                    &format!("no {field} unless strategy = \"{strategy}\""),
                    format!("strategy = {name:?}"),
                ))
            } else {
                Ok(())
            }
        };
        only_with("weights", r.weights.is_some(), "weighted")?;
        only_with("rules", !r.rules.is_empty(), "rules")?;
        only_with("learned", r.learned.is_some(), "learned")?;
        let strategy = match name {
            "priority" => RouteStrategy::Priority,
            "least-busy" => RouteStrategy::LeastBusy,
            "least-latency" => RouteStrategy::LeastLatency,
            "cost" => RouteStrategy::Cost,
            "weighted" => RouteStrategy::Weighted(self.weights(key, r, chain, index_of)?),
            "rules" => RouteStrategy::Rules(self.rules(key, &r.rules, index_of)?),
            "learned" => {
                RouteStrategy::Learned(self.learned(key, &r.learned.clone().unwrap_or_default())?)
            }
            other => {
                return Err(self.invalid(
                    &format!("{key}.strategy"),
                    STRATEGIES,
                    format!("{other:?}"),
                ))
            }
        };
        let decay = self.duration(&format!("{key}.decay"), &r.decay, Duration::from_secs(10))?;
        if decay.is_zero() {
            return Err(self.invalid(&format!("{key}.decay"), "a positive duration", "0s"));
        }
        Ok(Routing { strategy, decay })
    }

    fn weights(
        &self,
        key: &str,
        r: &RawRoute,
        chain: &[usize],
        index_of: &BTreeMap<String, usize>,
    ) -> Result<Vec<(usize, f64)>, ConfigError> {
        let given = r.weights.clone().unwrap_or_default();
        for (name, w) in &given {
            let k = format!("{key}.weights.{name}");
            match index_of.get(name) {
                Some(i) if chain.contains(i) => {}
                _ => {
                    let in_chain: Vec<String> = index_of
                        .iter()
                        .filter(|(_, i)| chain.contains(i))
                        .map(|(n, _)| n.clone())
                        .collect();
                    return Err(self.invalid(
                        &k,
                        &format!("a deployment of the chain ({})", names(in_chain.iter())),
                        format!("{name:?}"),
                    ));
                }
            }
            if !(w.is_finite() && *w >= 0.0) {
                return Err(self.invalid(&k, "a weight >= 0", w));
            }
        }
        let out: Vec<(usize, f64)> = chain
            .iter()
            .map(|&i| {
                let name = index_of
                    .iter()
                    .find(|(_, j)| **j == i)
                    .map(|(n, _)| n.as_str());
                let w = name.and_then(|n| given.get(n)).copied().unwrap_or(1.0);
                (i, w)
            })
            .collect();
        if out.iter().all(|(_, w)| *w == 0.0) {
            return Err(self.invalid(
                &format!("{key}.weights"),
                "at least one weight > 0",
                "all weights 0",
            ));
        }
        Ok(out)
    }

    fn rules(
        &self,
        key: &str,
        raw: &[RawRule],
        index_of: &BTreeMap<String, usize>,
    ) -> Result<Vec<Rule>, ConfigError> {
        let mut rules = Vec::new();
        for (n, r) in raw.iter().enumerate() {
            let k = format!("{key}.rules[{n}]");
            if r.chain.is_empty() {
                return Err(self.invalid(&format!("{k}.chain"), "at least one deployment", "[]"));
            }
            let mut chain = Vec::new();
            for (i, d) in r.chain.iter().enumerate() {
                let idx = index_of.get(d).ok_or_else(|| {
                    self.invalid(
                        &format!("{k}.chain[{i}]"),
                        &format!("one of the deployments ({})", names(index_of.keys())),
                        format!("{d:?}"),
                    )
                })?;
                chain.push(*idx);
            }
            let w = &r.when;
            if let (Some(lo), Some(hi)) = (w.min_prompt_tokens, w.max_prompt_tokens) {
                if lo > hi {
                    return Err(self.invalid(
                        &format!("{k}.when.max_prompt_tokens"),
                        &format!(">= min_prompt_tokens ({lo})"),
                        hi,
                    ));
                }
            }
            if w.header_value.is_some() && w.header.is_none() {
                return Err(self.invalid(
                    &format!("{k}.when.header"),
                    "a header name (header_value needs it)",
                    "nothing",
                ));
            }
            rules.push(Rule {
                when: RuleMatch {
                    min_prompt_tokens: w.min_prompt_tokens,
                    max_prompt_tokens: w.max_prompt_tokens,
                    tools: w.tools,
                    response_format: w.response_format,
                    images: w.images,
                    header: w.header.as_ref().map(|h| h.trim().to_ascii_lowercase()),
                    header_value: w.header_value.clone(),
                },
                chain,
            });
        }
        Ok(rules)
    }

    fn learned(&self, key: &str, l: &RawLearned) -> Result<LearnedConfig, ConfigError> {
        let k = |f: &str| format!("{key}.learned.{f}");
        let mut weights = [0.0; 3];
        for (slot, (f, v, d)) in weights.iter_mut().zip([
            ("success", l.success, 1.0),
            ("latency", l.latency, 0.3),
            ("cost", l.cost, 0.1),
        ]) {
            let v = v.unwrap_or(d);
            if !(v.is_finite() && v >= 0.0) {
                return Err(self.invalid(&k(f), "a weight >= 0", v));
            }
            *slot = v;
        }
        if weights.iter().all(|w| *w == 0.0) {
            return Err(self.invalid(
                &format!("{key}.learned"),
                "at least one of success, latency, cost > 0",
                "all 0",
            ));
        }
        let exploration = l.exploration.unwrap_or(0.05);
        if !(0.0..=1.0).contains(&exploration) {
            return Err(self.invalid(&k("exploration"), "a share in 0..=1", exploration));
        }
        let latency_target = self.duration(
            &k("latency_target"),
            &l.latency_target,
            Duration::from_secs(1),
        )?;
        if latency_target.is_zero() {
            return Err(self.invalid(&k("latency_target"), "a positive duration", "0s"));
        }
        Ok(LearnedConfig {
            success_weight: weights[0],
            latency_weight: weights[1],
            cost_weight: weights[2],
            latency_target,
            exploration,
        })
    }

    pub(super) fn hedge(
        &self,
        key: &str,
        r: &RawRoute,
    ) -> Result<Option<HedgePolicy>, ConfigError> {
        if r.hedge != Some(true) {
            if r.hedge_after.is_some() {
                return Err(self.invalid(
                    &format!("{key}.hedge_after"),
                    "no hedge_after unless hedge = true",
                    "hedge off",
                ));
            }
            return Ok(None);
        }
        let d = HedgePolicy::default();
        let fixed = match r.hedge_after.as_deref().map(str::trim) {
            None | Some("p95") => None,
            Some(_) => {
                let v = self
                    .duration(
                        &format!("{key}.hedge_after"),
                        &r.hedge_after,
                        Duration::ZERO,
                    )
                    .map_err(|_| {
                        self.invalid(
                            &format!("{key}.hedge_after"),
                            "\"p95\" or a duration like \"200ms\"",
                            format!("{:?}", r.hedge_after.clone().unwrap_or_default()),
                        )
                    })?;
                if v.is_zero() {
                    return Err(self.invalid(
                        &format!("{key}.hedge_after"),
                        "a positive duration",
                        "0s",
                    ));
                }
                Some(v)
            }
        };
        Ok(Some(HedgePolicy { fixed, ..d }))
    }
}
