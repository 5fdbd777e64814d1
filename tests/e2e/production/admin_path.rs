//! The administrator's path without traps (issue 30): every refusal on the way to production
//! names the file or variable, the key, the problem and the fix, with the exit status the README
//! gives; output into a closed pipe ends quietly.

use std::path::Path;
use std::process::{Command, Stdio};

use super::{herald_in, text};
use crate::support::herald::herald_bin;

/// Writes `toml` to `dir/herald.toml`, runs `herald --config … ARGS` with `env`, and returns
/// (exit code, stderr).
fn run(dir: &Path, toml: &str, env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String) {
    let config = dir.join("herald.toml");
    std::fs::write(&config, toml).expect("write config");
    let out = herald_in(dir, &config, env, args);
    (out.status.code(), text(&out.stderr))
}

#[test]
fn bad_values_say_file_key_problem_and_an_example_with_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: [(&str, &[&str]); 6] = [
        (
            "[server]\nlog_level = \"verbose\"\n",
            &[
                "herald.toml: server.log_level",
                "\"verbose\" is not a log level",
                "\"debug\"",
                "herald=debug",
            ],
        ),
        (
            "[server]\ngrace_period = 30\n",
            &["server.grace_period", "\"30s\""],
        ),
        (
            "[server]\nlog_format = \"jsonl\"\n",
            &[
                "server.log_format",
                "\"jsonl\" is not one of \"text\", \"json\"",
            ],
        ),
        (
            "[smtp]\nsubmission = \"587\"\n",
            &["smtp.submission", "\"0.0.0.0:587\""],
        ),
        (
            "[server]\nhostnme = \"relay.example.test\"\n",
            &["server.hostnme", "did you mean \"hostname\""],
        ),
        (
            "[apps.billing]\npassword_hash = \"$argon2id$v=19$m=19456,t=2,p=1$x$y\"\n\
             senders = [\"*@example.com\"]\n",
            &["apps.billing.senders", "wildcard", "\"@example.com\""],
        ),
    ];
    for (toml, wanted) in cases {
        let (code, err) = run(dir.path(), toml, &[], &["dkim", "list"]);
        assert_eq!(code, Some(2), "{toml}: {err}");
        for w in wanted {
            assert!(err.contains(w), "{toml}: wanted {w:?} in: {err}");
        }
    }
}

#[test]
fn environment_mistakes_are_blamed_on_the_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = "[server]\nhostname = \"relay.example.test\"\n";
    let (code, err) = run(
        dir.path(),
        toml,
        &[("HERALD__SERVER__HOSTNAM", "x.example.test")],
        &["dkim", "list"],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("environment variable HERALD__SERVER__HOSTNAM")
            && err.contains("did you mean HERALD__SERVER__HOSTNAME?"),
        "{err}"
    );
    assert!(!err.contains("herald.toml:"), "not the file's fault: {err}");

    // The README's own example, on a file without that app.
    let (code, err) = run(
        dir.path(),
        toml,
        &[("HERALD__APPS__BILLING__RATE_LIMIT", "0")],
        &["dkim", "list"],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("environment variable HERALD__APPS__BILLING__RATE_LIMIT: apps.billing")
            && err.contains("no app \"billing\"")
            && err.contains("herald app add billing"),
        "{err}"
    );
    assert!(!err.contains("password_hash"), "{err}");
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("herald.toml");
    std::fs::write(&config, "[server]\nhostname = \"relay.example.test\"\n").expect("write");
    for args in [&["dkim", "list"][..], &["dns"][..], &["--help"][..]] {
        let mut child = Command::new(herald_bin())
            .arg("--config")
            .arg(&config)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        // The reader is gone before herald writes a byte (`| head -0`).
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let err = text(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        use std::os::unix::process::ExitStatusExt;
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
            "{args:?}: {:?} {err}",
            out.status
        );
    }
}

#[test]
fn a_privileged_port_without_the_capability_names_cap_net_bind_service() {
    let unprivileged_start: u16 =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1024);
    if unprivileged_start <= 587 {
        eprintln!("skipped: this kernel lets anyone bind port 587");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let ip = crate::support::free_ip();
    let toml = format!(
        "[server]\nhostname = \"relay.example.test\"\ndata_dir = \"data\"\n\n[smtp]\n\
         submission = \"{ip}:587\"\n\n[tls]\nallow_dev_certs = true\n"
    );
    let config = dir.path().join("herald.toml");
    std::fs::write(&config, toml).expect("write");
    let mut cmd = if unsafe { libc::geteuid() } == 0 {
        // As root, drop to nobody the way an administrator starting it by hand would not.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(herald_bin());
        c
    } else {
        Command::new(herald_bin())
    };
    let out = cmd
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run herald");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("{ip}:587")), "{err}");
    assert!(err.contains("CAP_NET_BIND_SERVICE"), "{err}");
    assert!(err.contains("AmbientCapabilities"), "{err}");
}

#[test]
fn reload_of_a_file_that_does_not_validate_exits_2_and_sends_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, err) = run(dir.path(), "[smtp]\nmax_recipients = 0\n", &[], &["reload"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("smtp.max_recipients"), "{err}");
    assert!(
        err.contains("nothing reloaded") && err.contains("keeps its configuration"),
        "{err}"
    );
}

#[test]
fn a_config_the_user_cannot_read_says_who_may() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("herald.toml");
    std::fs::write(&config, "[server]\nhostname = \"relay.example.test\"\n").expect("write");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    // SAFETY: geteuid has no preconditions.
    let mut cmd = if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(herald_bin());
        c
    } else {
        Command::new(herald_bin())
    };
    let out = cmd
        .arg("--config")
        .arg(&config)
        .arg("dns")
        .stdin(Stdio::null())
        .output()
        .expect("run herald");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cannot read the file") && err.contains("sudo -u herald"),
        "{err}"
    );
}

#[test]
fn serving_as_another_user_than_the_data_directory_owner_warns() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to give the data directory to another user");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = crate::support::herald::base_config(dir.path());
    std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).expect("chown");
    let config = dir.path().join("herald.toml");
    std::fs::write(&config, toml::to_string(&cfg).expect("toml")).expect("write");
    let mut h = crate::support::herald::Herald::spawn(&config, cfg, &["serve"]);
    let line = h.wait_for_log("belongs to nobody", std::time::Duration::from_secs(60));
    assert!(
        line.contains("serving as root") && line.contains("sudo -u nobody herald serve"),
        "{line}"
    );
    h.terminate();
}
