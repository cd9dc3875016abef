//! Cost accounting: what a request costs upstream (usage times the
//! deployment's price per million tokens), every attempt that returned
//! usage included (continuations, repairs, refusals that were fallen over,
//! hedges), and where that spend is kept.
//!
//! Spend lives in the engine's [`keel_store::Store`]: in memory for one
//! process, on Redis with `[store] redis`, so every replica adds to and
//! checks budgets against the fleet's total. A charge is written before the
//! answer is returned (bounded by `[store] timeout`), so the next request
//! of the tenant, on any replica, sees it.

use keel_store::{Month, SpendReport};
use keel_wire::openai::Usage;

use crate::call::{ChatCall, RequestReport};
use crate::config::Deployment;
use crate::requirements::Requirements;
use crate::EngineState;

/// USD for `tokens` at `price` per million.
fn usd(tokens: u64, price_per_million: f64) -> f64 {
    tokens as f64 * price_per_million / 1_000_000.0
}

/// The estimated cost of a request on `dep`: the prompt estimate plus the
/// expected output (`max_tokens`, or 512 when unset).
pub(crate) fn estimate(dep: &Deployment, needs: &Requirements) -> f64 {
    let output = if needs.max_tokens > 0 {
        needs.max_tokens
    } else {
        512
    };
    usd(u64::from(needs.prompt_tokens), dep.input_price) + usd(u64::from(output), dep.output_price)
}

/// The cost of an answer's usage on `dep`.
pub(crate) fn of_usage(dep: &Deployment, u: &Usage) -> f64 {
    usd(u64::from(u.prompt_tokens), dep.input_price)
        + usd(u64::from(u.completion_tokens), dep.output_price)
}

/// Charges one upstream answer's usage to the request, its tenant and the deployment.
pub(crate) async fn charge(
    inner: &EngineState,
    call: &ChatCall,
    dep: &Deployment,
    usage: Option<&Usage>,
    meta: &mut RequestReport,
) {
    let Some(u) = usage else { return };
    let c = of_usage(dep, u);
    if c > 0.0 {
        meta.cost_usd += c;
        record(inner, call, dep, c).await;
    }
}

/// Charges a streamed round's usage to the tenant and the deployment (the
/// headers are gone by then, so `x-keel-cost-usd` of a stream counts only
/// what was spent before its first byte).
pub(crate) async fn charge_stream(inner: &EngineState, call: &ChatCall, di: usize, u: &Usage) {
    let Some(rt) = inner.deployments.get(di) else {
        return;
    };
    let c = of_usage(&rt.spec, u);
    if c > 0.0 {
        record(inner, call, &rt.spec, c).await;
    }
}

async fn record(inner: &EngineState, call: &ChatCall, dep: &Deployment, usd: f64) {
    let charge = SpendReport::charge(Month::now(), call.options.tenant.as_deref(), &dep.name, usd);
    inner.store.spend_add(charge).await;
}
