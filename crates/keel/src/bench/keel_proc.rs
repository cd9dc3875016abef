//! Keel under test as a child `keel serve` process (and the bare forwarder
//! as a child `keel bench forwarder`): each in its own process, so both pay
//! the same scheduling costs and their CPU time and resident memory can be
//! read from `/proc/<pid>` apart from the load generator's.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: u64 = 100;

/// A running child server; killed when dropped.
pub(crate) struct KeelProcess {
    child: Child,
    config_path: Option<PathBuf>,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// User plus system CPU time of a process (`self` for this one).
pub(crate) fn cpu_time_of(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are
    // fields 14 and 15 of the whole line.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis(
        (utime + stime) * 1000 / TICKS_PER_SECOND,
    ))
}

/// A free loopback port (bound and released; the child binds it next).
pub(crate) fn free_port() -> Result<SocketAddr, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr().map_err(|e| e.to_string())
}

impl KeelProcess {
    /// Writes `config` (whose `[server] listen` must be `addr`) and starts
    /// `keel serve` on it; waits until `/healthz` answers.
    pub(crate) async fn start(
        bin: Option<&PathBuf>,
        config: &str,
        addr: SocketAddr,
    ) -> Result<KeelProcess, String> {
        let bin = match bin {
            Some(b) => b.clone(),
            None => std::env::current_exe().map_err(|e| format!("cannot find keel: {e}"))?,
        };
        let config_path = std::env::temp_dir().join(format!(
            "keel-bench-{}-{}.toml",
            std::process::id(),
            addr.port()
        ));
        std::fs::write(&config_path, config)
            .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
        let mut args = vec!["serve".into(), "--config".into()];
        args.push(config_path.clone().into_os_string());
        Self::spawn(&bin, &args, addr, Some(config_path)).await
    }

    /// Starts the bare forwarder (`keel bench forwarder`) in its own process.
    pub(crate) async fn forwarder(
        bin: Option<&PathBuf>,
        addr: SocketAddr,
        upstream: SocketAddr,
    ) -> Result<KeelProcess, String> {
        let bin = match bin {
            Some(b) => b.clone(),
            None => std::env::current_exe().map_err(|e| format!("cannot find keel: {e}"))?,
        };
        let args: Vec<std::ffi::OsString> = vec![
            "bench".into(),
            "forwarder".into(),
            "--listen".into(),
            addr.to_string().into(),
            "--upstream".into(),
            upstream.to_string().into(),
        ];
        Self::spawn(&bin, &args, addr, None).await
    }

    async fn spawn(
        bin: &PathBuf,
        args: &[std::ffi::OsString],
        addr: SocketAddr,
        config_path: Option<PathBuf>,
    ) -> Result<KeelProcess, String> {
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Logs are formatted at the default filter (their cost is part
            // of what is measured) and discarded.
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let mut p = KeelProcess {
            child,
            config_path,
            addr,
        };
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = p.child.try_wait() {
                return Err(format!("{} exited at start: {status}", bin.display()));
            }
            let ok = client
                .get(format!("http://{addr}/healthz"))
                .timeout(Duration::from_millis(500))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(p);
            }
            if Instant::now() > deadline {
                let _ = p.child.kill();
                return Err(format!(
                    "{} did not answer /healthz within 15 s",
                    bin.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// User plus system CPU time used so far.
    pub(crate) fn cpu_time(&self) -> Option<Duration> {
        cpu_time_of(&self.child.id().to_string())
    }

    /// `(VmRSS, VmHWM)` in KiB: resident now and at its peak.
    pub(crate) fn rss_kib(&self) -> Option<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        };
        Some((field("VmRSS:")?, field("VmHWM:")?))
    }
}

impl Drop for KeelProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(path) = &self.config_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Upstream attempts Keel counted, from its `/admin/status`.
pub(crate) async fn admin_attempts(client: &reqwest::Client, addr: SocketAddr) -> Option<u64> {
    let v: serde_json::Value = client
        .get(format!("http://{addr}/admin/status"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some(
        v.get("deployments")?
            .as_array()?
            .iter()
            .filter_map(|d| d.get("attempts").and_then(serde_json::Value::as_u64))
            .sum(),
    )
}
