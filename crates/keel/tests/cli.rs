//! The `keel` command line: help texts, check-config, clear errors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn keel(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .env("OPENAI_API_KEY", "sk-cli-test-secret-123456")
        .env("ANTHROPIC_API_KEY", "sk-ant-cli-test-secret-654321")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn example(name: &str) -> String {
    format!("{}/../../examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn help_lists_every_subcommand() {
    let (code, out, _) = keel(&["--help"]);
    assert_eq!(code, 0);
    for sub in ["serve", "batch", "chaos", "demo", "bench", "check-config"] {
        assert!(
            out.contains(sub),
            "`keel --help` does not list {sub}:\n{out}"
        );
    }
}

#[test]
fn chaos_help_documents_its_flags() {
    let (code, out, _) = keel(&["chaos", "--help"]);
    assert_eq!(code, 0);
    for flag in ["--listen", "--scenario", "--seed"] {
        assert!(out.contains(flag), "{out}");
    }
}

#[test]
fn check_config_prints_the_resolved_config_with_keys_masked() {
    let (code, out, err) = keel(&["check-config", &example("keel.toml")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("[routes.gpt-4o]"), "{out}");
    assert!(out.contains("chain = [\"gpt-4o\", \"sonnet\"]"), "{out}");
    assert!(!out.contains("sk-cli-test-secret-123456"), "{out}");
    assert!(!out.contains("sk-ant-cli-test-secret-654321"), "{out}");
    assert!(err.contains(": ok"), "{err}");
}

#[test]
fn check_config_rejects_a_bad_file_with_file_key_and_expectation() {
    let dir = std::env::temp_dir().join(format!("keel-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "[deployments.x]\nprovider = \"nope\"\nmodel = \"m\"\n",
    )
    .unwrap();
    let (code, _, err) = keel(&["check-config", path.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert_eq!(
        err.trim(),
        format!("error: {}: deployments.x.provider: expected one of the providers (none defined), got \"nope\"", path.display())
    );
}

#[test]
fn serve_with_a_missing_config_fails_clearly() {
    let (code, _, err) = keel(&["serve", "--config", "/nonexistent/keel.toml"]);
    assert_eq!(code, 2);
    assert!(
        err.starts_with("error: /nonexistent/keel.toml: cannot read:"),
        "{err}"
    );
}
