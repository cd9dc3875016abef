//! `keel serve` and `keel check-config`.
//!
//! `keel serve` reloads its config on `SIGHUP` (as `POST /admin/reload`
//! does): the file is validated as `check-config` does and swapped in whole,
//! or refused with the running config kept (see [`keel_engine::reload`]).

use std::path::Path;
use std::process::ExitCode;

use keel_engine::config::Config;
use keel_engine::{Engine, LiveEngine};

/// Loads a config or prints its error.
fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

/// `keel check-config FILE`: validates and prints the resolved config.
pub fn check_config(path: &Path) -> ExitCode {
    match load(path) {
        Ok(c) => {
            print!("{}", c.describe());
            eprintln!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// `keel serve --config FILE`.
pub fn serve(path: &Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let listen = config.server.listen;
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Opens the store first: an unreachable Redis with `[store] required`
    // (the default) stops here with the reason.
    let engine = match rt.block_on(Engine::connect(config)) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let live = LiveEngine::new(engine, Some(path.to_path_buf()));
    rt.block_on(async move {
        // Installed before the listener opens: once a client can connect,
        // a SIGHUP reloads instead of killing the process.
        #[cfg(unix)]
        if let Err(e) = reload_on_hangup(live.clone()) {
            eprintln!("error: cannot listen for SIGHUP: {e}");
            return ExitCode::FAILURE;
        }
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {listen}: {e}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(%listen, "keel serving the OpenAI API at /v1/chat/completions and the Anthropic API at /v1/messages");
        let shutdown = async {
            let ctrl_c = tokio::signal::ctrl_c();
            #[cfg(unix)]
            {
                let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        return;
                    }
                };
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            #[cfg(not(unix))]
            {
                let _ = ctrl_c.await;
            }
            tracing::info!("shutting down: finishing in-flight requests");
        };
        match keel_server::serve_live(live, listener, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Reloads `live` on every `SIGHUP` (the result is logged and counted by
/// [`LiveEngine::reload`]).
#[cfg(unix)]
fn reload_on_hangup(live: LiveEngine) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the config");
            let live = live.clone();
            // Reads a file and builds policies: off the async workers.
            let _ = tokio::task::spawn_blocking(move || live.reload()).await;
        }
    });
    Ok(())
}
