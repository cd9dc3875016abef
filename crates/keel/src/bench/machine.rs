//! The machine a report was measured on: numbers without it mean little.

use serde::Serialize;

/// CPU count, kernel, load and time of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs available to the process.
    pub nproc: usize,
    /// `uname -a`, when it can be run.
    pub uname: String,
    /// `/proc/loadavg` at the start of the run (1, 5, 15 minutes).
    pub load_before: String,
    /// `/proc/loadavg` at the end of the run.
    pub load_after: String,
    /// Seconds since the Unix epoch at the start of the run.
    pub started_unix: u64,
}

impl Machine {
    /// The machine now.
    pub fn now() -> Machine {
        Machine {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            uname: std::process::Command::new("uname")
                .arg("-a")
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default(),
            load_before: loadavg(),
            load_after: String::new(),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    /// Records the load at the end of the run.
    pub fn finish(&mut self) {
        self.load_after = loadavg();
    }

    /// One Markdown line.
    pub fn markdown(&self) -> String {
        format!(
            "Machine: {} CPUs, `{}`; load average before {} / after {}",
            self.nproc, self.uname, self.load_before, self.load_after
        )
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
