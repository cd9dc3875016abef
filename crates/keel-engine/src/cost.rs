//! Cost accounting: what a request costs upstream (usage times the
//! deployment's price per million tokens), every attempt that returned
//! usage included (continuations, repairs, refusals that were fallen over,
//! hedges), and where that spend is kept.
//!
//! Spend lives behind [`SpendLedger`] so it can be shared by replicas: the
//! engine ships [`MemoryLedger`] (one process); a store-backed ledger
//! (Redis, `keel-store`) plugs in through [`crate::Engine::with_spend_ledger`]
//! without touching the pipeline.

use std::collections::BTreeMap;
use std::sync::Mutex;

use keel_wire::openai::Usage;
use serde::Serialize;

use crate::call::{ChatCall, Meta};
use crate::config::Deployment;
use crate::pipeline::Needs;
use crate::{lock, Inner};

/// USD for `tokens` at `price` per million.
fn usd(tokens: u64, price_per_million: f64) -> f64 {
    tokens as f64 * price_per_million / 1_000_000.0
}

/// The estimated cost of a request on `dep`: the prompt estimate plus the
/// expected output (`max_tokens`, or 512 when unset).
pub(crate) fn estimate(dep: &Deployment, needs: &Needs) -> f64 {
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
pub(crate) fn charge(
    inner: &Inner,
    call: &ChatCall,
    dep: &Deployment,
    usage: Option<&Usage>,
    meta: &mut Meta,
) {
    let Some(u) = usage else { return };
    let c = of_usage(dep, u);
    if c <= 0.0 {
        return;
    }
    meta.cost_usd += c;
    inner
        .spend
        .add(call.options.tenant.as_deref(), &dep.name, &month_now(), c);
}

/// Charges a streamed round's usage to the tenant and the deployment (the
/// headers are gone by then, so `x-keel-cost-usd` of a stream counts only
/// what was spent before its first byte).
pub(crate) fn charge_ledger(inner: &Inner, call: &ChatCall, di: usize, u: &Usage) {
    let Some(rt) = inner.deployments.get(di) else {
        return;
    };
    let c = of_usage(&rt.spec, u);
    if c > 0.0 {
        inner.spend.add(
            call.options.tenant.as_deref(),
            &rt.spec.name,
            &month_now(),
            c,
        );
    }
}

/// The current UTC month as `YYYY-MM` (budgets are monthly).
pub(crate) fn month_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m) = year_month(secs / 86_400);
    format!("{y:04}-{m:02}")
}

/// Civil year and month of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn year_month(days: u64) -> (i64, u32) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m)
}

/// Where spend is kept. Implementations must be cheap: `add` runs once per
/// answered attempt.
pub trait SpendLedger: Send + Sync {
    /// Adds `usd` spent in `month` (`YYYY-MM`) by `tenant` (`None`: no
    /// tenant) on `deployment`.
    fn add(&self, tenant: Option<&str>, deployment: &str, month: &str, usd: f64);
    /// What `tenant` spent in `month`.
    fn tenant_spend(&self, tenant: &str, month: &str) -> f64;
    /// Everything recorded for `month`.
    fn report(&self, month: &str) -> SpendReport;
}

/// Spend of one month.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SpendReport {
    /// `YYYY-MM`.
    pub month: String,
    /// USD per tenant.
    pub tenants: BTreeMap<String, f64>,
    /// USD per deployment.
    pub deployments: BTreeMap<String, f64>,
}

/// In-process spend (lost on restart; one replica's view only).
#[derive(Default)]
pub struct MemoryLedger {
    months: Mutex<BTreeMap<String, SpendReport>>,
}

impl SpendLedger for MemoryLedger {
    fn add(&self, tenant: Option<&str>, deployment: &str, month: &str, usd: f64) {
        let mut m = lock(&self.months);
        // Keep the current and the previous month only.
        while m.len() > 2 {
            m.pop_first();
        }
        let r = m.entry(month.to_string()).or_insert_with(|| SpendReport {
            month: month.to_string(),
            ..SpendReport::default()
        });
        if let Some(t) = tenant {
            *r.tenants.entry(t.to_string()).or_default() += usd;
        }
        *r.deployments.entry(deployment.to_string()).or_default() += usd;
    }

    fn tenant_spend(&self, tenant: &str, month: &str) -> f64 {
        lock(&self.months)
            .get(month)
            .and_then(|r| r.tenants.get(tenant).copied())
            .unwrap_or(0.0)
    }

    fn report(&self, month: &str) -> SpendReport {
        lock(&self.months)
            .get(month)
            .cloned()
            .unwrap_or_else(|| SpendReport {
                month: month.to_string(),
                ..SpendReport::default()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_months() {
        assert_eq!(year_month(0), (1970, 1));
        assert_eq!(year_month(31), (1970, 2));
        // 2024-02-29 is day 19782; 2024-03-01 is 19783.
        assert_eq!(year_month(19_782), (2024, 2));
        assert_eq!(year_month(19_783), (2024, 3));
        assert_eq!(year_month(20_454), (2026, 1));
    }

    #[test]
    fn ledger_sums_per_tenant_and_deployment() {
        let l = MemoryLedger::default();
        l.add(Some("a"), "d1", "2026-01", 0.5);
        l.add(Some("a"), "d2", "2026-01", 0.25);
        l.add(None, "d1", "2026-01", 1.0);
        assert_eq!(l.tenant_spend("a", "2026-01"), 0.75);
        assert_eq!(l.tenant_spend("a", "2026-02"), 0.0);
        let r = l.report("2026-01");
        assert_eq!(r.deployments["d1"], 1.5);
    }
}
