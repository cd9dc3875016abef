//! Helpers shared by the engine's integration tests (each test file is its
//! own crate and uses only some of them).

#![allow(dead_code)]

pub mod report;
pub mod stream;

/// `keel chaos` serving the scenario `toml` with `seed`, on an ephemeral
/// loopback port.
pub async fn chaos(toml: &str, seed: u64) -> keel_chaos::ChaosHandle {
    let scenario = keel_chaos::Scenario::from_toml_str(toml, "chaos.toml").unwrap();
    keel_chaos::ChaosServer::start(scenario, seed, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}
