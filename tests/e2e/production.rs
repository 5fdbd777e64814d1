//! End-to-end tests: running herald in production — config paths and environment overrides,
//! first-day refusals, service-manager readiness, `herald dkim activate`, JSON logs.

mod activate;
mod first_day;
mod metrics;
mod reload;
mod service;
mod startup;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::support::herald::herald_bin;

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
        use std::io::BufRead;
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
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                eprintln!("[herald] {line}");
                log2.lock().expect("log").push(line.clone());
                let _ = tx.send(line);
            }
        });
        Running { child, lines, log }
    }

    /// Waits for a stderr line containing `needle`; panics with the log after a minute.
    fn wait_for(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "herald did not log {needle:?}; log:\n{}",
                    self.log.lock().expect("log").join("\n")
                ),
            }
        }
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
