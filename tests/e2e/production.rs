//! End-to-end tests: running herald in production — config paths and environment overrides,
//! first-day refusals, service-manager readiness, `herald dkim activate`, JSON logs.

mod activate;
mod first_day;
mod metrics;
mod reload;
mod service;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use std::time::Duration;

use crate::support::herald::{collect_stderr, herald_bin, wait_for_line};

/// Runs `herald --config CONFIG ARGS…` from `cwd` with extra environment variables.
fn herald_in(cwd: &Path, config: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(herald_bin())
        .current_dir(cwd)
        .arg("--config")
        .arg(config)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run herald")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A herald child started with extra environment variables, its stderr lines collected.
struct Running {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Running {
    /// Writes `cfg` to `dir/herald.toml` and starts `herald serve` with `env`.
    fn serve(dir: &Path, cfg: &toml::Table, env: &[(&str, &str)]) -> Running {
        let config = dir.join("herald.toml");
        std::fs::write(&config, toml::to_string(cfg).expect("toml")).expect("write config");
        let mut child = Command::new(herald_bin())
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn herald");
        let (log, lines) = collect_stderr(&mut child);
        Running { child, lines, log }
    }

    /// Waits for a stderr line containing `needle`; panics with the log after a minute.
    fn wait_for(&self, needle: &str) -> String {
        wait_for_line(&self.lines, &self.log, needle, Duration::from_secs(60))
    }

    /// Sends `signal` to herald.
    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { kill(self.child.id() as i32, signal) };
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}
