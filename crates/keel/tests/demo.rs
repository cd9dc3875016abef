//! `keel demo` in miniature: the same scenario, gateway and workload at a
//! smaller scale, with the acceptance bar of docs/design.md §12 asserted.

use std::time::Duration;

use keel::demo::{run_plan, DemoPlan};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keel_turns_a_flaky_primary_into_a_reliable_route() {
    let plan = DemoPlan {
        requests: 400,
        rate: 100.0,
        outage: (Duration::from_secs(1), Duration::from_secs(3)),
    };
    let report = run_plan(plan, false).await.unwrap();
    println!("{}", report.table);
    assert!(
        report.keel_success >= 99.9,
        "through Keel: {}%\n{}",
        report.keel_success,
        report.table
    );
    assert!(
        report.direct_success < 90.0,
        "the faults must show directly: {}%",
        report.direct_success
    );
    assert!(
        report.outage_amplification <= 1.2,
        "amplification during the outage: {}",
        report.outage_amplification
    );
}
