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

use crate::support::herald::{Herald, herald_bin};

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

/// Writes `cfg` to `dir/herald.toml` and starts `herald serve` with extra environment
/// variables `env` (not waiting for it to be ready).
fn serve(dir: &Path, cfg: &toml::Table, env: &[(&str, &str)]) -> Herald {
    let config = dir.join("herald.toml");
    std::fs::write(&config, toml::to_string(cfg).expect("toml")).expect("write config");
    Herald::spawn_with_env(&config, cfg.clone(), &["serve"], env)
}
