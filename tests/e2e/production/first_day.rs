//! The traps of a new administrator's first day: relative paths, environment overrides (lists,
//! errors naming the variable), name servers without a port, the README's demo hash in a
//! production config, `herald app` at a terminal, `herald sts show` when DNS does not answer.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::{herald_in, serve, text};
use crate::support::herald::{DEMO_HASH, base_config};

#[test]
fn relative_paths_resolve_against_the_config_file() {
    let root = tempfile::tempdir().expect("tempdir");
    let etc = root.path().join("etc");
    let elsewhere = root.path().join("elsewhere");
    std::fs::create_dir_all(&etc).expect("mkdir");
    std::fs::create_dir_all(&elsewhere).expect("mkdir");
    let config = etc.join("herald.toml");
    let mut text_cfg = "# production-like: relative paths only\n[server]\nhostname = \
                        \"relay.example.test\"\ndata_dir = \"data\"\n"
        .to_string();
    std::fs::write(&config, &text_cfg).expect("write");

    // generate from another directory: the key goes under the config's directory.
    let out = herald_in(
        &elsewhere,
        &config,
        &[],
        &[
            "dkim",
            "generate",
            "--domain",
            "example.test",
            "--selector",
            "s1",
            "--algorithm",
            "ed25519",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(etc.join("data/keys/example.test.s1.ed25519.pem").exists());
    assert!(!elsewhere.join("data").exists());
    // The printed block uses a path relative to the config file, so it pastes as it is.
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("file = \"data/keys/example.test.s1.ed25519.pem\""),
        "{stdout}"
    );
    let block = stdout
        .split("[[dkim.keys]]")
        .nth(1)
        .and_then(|b| b.split("\n\n").next())
        .expect("config block printed");
    text_cfg.push_str("\n[[dkim.keys]]");
    text_cfg.push_str(block);
    text_cfg.push('\n');
    std::fs::write(&config, &text_cfg).expect("write");

    let out = herald_in(&elsewhere, &config, &[], &["dkim", "list"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains(" ok"), "{}", text(&out.stdout));

    // The spool too: the offline queue opens <config dir>/data/spool.
    let out = herald_in(&elsewhere, &config, &[], &["queue", "list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(etc.join("data/spool").is_dir());
    assert!(!elsewhere.join("data").exists());
}

#[test]
fn environment_overrides_lists_and_errors_name_the_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = base_config(dir.path());
    let plain = crate::support::free_addr();
    crate::support::set(&mut cfg, "smtp.plain", plain.to_string());
    crate::support::set(
        &mut cfg,
        "smtp.plain_networks",
        vec!["127.0.0.0/8".to_string()],
    );
    // A name server without a port is port 53.
    crate::support::set(&mut cfg, "dns.servers", vec!["127.0.0.1".to_string()]);
    let config = dir.path().join("herald.toml");
    std::fs::write(&config, toml::to_string(&cfg).expect("toml")).expect("write");

    // A bad list value: the error names the variable, not the file.
    let out = herald_in(
        dir.path(),
        &config,
        &[(
            "HERALD__SMTP__PLAIN_SENDERS",
            "scanner@example.test, not-an-address",
        )],
        &["serve"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("environment variable HERALD__SMTP__PLAIN_SENDERS: smtp.plain_senders"),
        "{err}"
    );
    assert!(!err.contains(&config.display().to_string()), "{err}");
    let out = herald_in(
        dir.path(),
        &config,
        &[("HERALD__SMTP__MAX_RECIPIENTS", "many")],
        &["serve"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("environment variable HERALD__SMTP__MAX_RECIPIENTS"),
        "{}",
        text(&out.stderr)
    );

    // A good list value takes effect: the plain listener accepts exactly the listed senders.
    let mut h = serve(
        dir.path(),
        &cfg,
        &[(
            "HERALD__SMTP__PLAIN_SENDERS",
            "scanner@example.test, @alerts.example.test",
        )],
    );
    h.wait_for_event("ready", Duration::from_secs(60));
    let stream = TcpStream::connect(plain).expect("connect plain listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    let mut reply = |cmd: Option<&str>| -> String {
        if let Some(cmd) = cmd {
            writer
                .write_all(format!("{cmd}\r\n").as_bytes())
                .expect("send");
        }
        let mut all = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("read reply");
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
    };
    assert!(reply(None).starts_with("220"));
    assert!(reply(Some("EHLO scanner.test")).starts_with("250"));
    assert!(reply(Some("MAIL FROM:<scanner@example.test>")).starts_with("250"));
    assert!(reply(Some("RSET")).starts_with("250"));
    assert!(reply(Some("MAIL FROM:<x@alerts.example.test>")).starts_with("250"));
    assert!(reply(Some("RSET")).starts_with("250"));
    assert!(reply(Some("MAIL FROM:<other@example.test>")).starts_with("550"));
}

#[test]
fn the_demo_hash_is_refused_in_a_production_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("herald.toml");
    let production = format!(
        "[server]\nhostname = \"relay.example.test\"\ndata_dir = \"data\"\n\n[apps.invoicing]\n\
         password_hash = \"{DEMO_HASH}\"\nsenders = [\"billing@example.test\"]\n"
    );
    std::fs::write(&config, &production).expect("write");
    let out = herald_in(dir.path(), &config, &[], &["serve"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("apps.invoicing.password_hash"), "{err}");
    assert!(err.contains("demo password"), "{err}");
    assert!(!dir.path().join("data").exists(), "nothing started");

    // The development config (allow_dev_*) may keep it.
    std::fs::write(
        &config,
        format!("{production}\n[tls]\nallow_dev_certs = true\n"),
    )
    .expect("write");
    let out = herald_in(dir.path(), &config, &[], &["dkim", "list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // The shipped production example carries no usable hash at all.
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/production.example.toml"),
    )
    .expect("example");
    assert!(!example.contains(DEMO_HASH));
    let uncommented: Vec<&str> = example
        .lines()
        .filter(|l| l.trim_start().starts_with("password_hash"))
        .collect();
    assert!(uncommented.is_empty(), "{uncommented:?}");
}

#[test]
fn app_add_warns_when_the_app_exists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        toml::to_string(&base_config(dir.path())).expect("toml"),
    )
    .expect("w");
    let out = herald_in(
        dir.path(),
        &config,
        &[],
        &["app", "add", "demo", "--sender", "@example.test"],
    );
    assert!(out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("app \"demo\" already exists"), "{err}");
    assert!(text(&out.stdout).contains("[apps.demo]"));
    let out = herald_in(
        dir.path(),
        &config,
        &[],
        &["app", "add", "billing", "--sender", "@example.test"],
    );
    assert!(out.status.success());
    assert!(
        !text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );
}

/// A shell command run on a pseudo-terminal by `script` (util-linux), which copies what we
/// type to it and what it shows back to us.
struct Terminal {
    child: std::process::Child,
    keys: std::process::ChildStdin,
    shown: std::sync::Arc<std::sync::Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
}

impl Terminal {
    fn run(shell_command: &str, dir: &std::path::Path) -> Terminal {
        use std::io::Read;
        use std::os::unix::process::CommandExt;
        let mut command = std::process::Command::new("script");
        // A terminal's processes get Ctrl-C's SIGINT, even when this test runs where it is
        // ignored (a background job of a script ignores SIGINT and SIGQUIT, and so would the
        // shell and herald on the terminal).
        // SAFETY: only signal(2), async-signal-safe, between fork and exec.
        unsafe {
            command.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                libc::signal(libc::SIGQUIT, libc::SIG_DFL);
                Ok(())
            });
        }
        let mut child = command
            .args(["-q", "-e", "-c", shell_command, "/dev/null"])
            .env("SHELL", "/bin/sh")
            .current_dir(dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("script (util-linux) runs");
        let keys = child.stdin.take().expect("stdin");
        let mut stdout = child.stdout.take().expect("stdout");
        let shown = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let shown2 = shown.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                shown2
                    .lock()
                    .expect("lock")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Terminal {
            child,
            keys,
            shown,
            reader,
        }
    }

    /// Waits until the terminal shows `needle` (a prompt).
    fn wait_for(&self, needle: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !self.shown.lock().expect("lock").contains(needle) {
            assert!(
                std::time::Instant::now() < deadline,
                "no {needle:?} prompt: {}",
                self.shown.lock().expect("lock")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Types `keys` (each answer only after its prompt appeared, as a person would: input
    /// typed earlier would be echoed by the terminal before herald could turn echo off).
    fn type_keys(&mut self, keys: &[u8]) {
        self.keys.write_all(keys).expect("type");
        self.keys.flush().expect("flush");
    }

    /// Waits for the command to end: its exit status and everything the terminal showed.
    fn finish(mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().expect("wait");
        drop(self.keys);
        self.reader.join().expect("reader");
        let shown = self.shown.lock().expect("lock").clone();
        (status, shown)
    }
}

#[test]
fn hash_password_at_a_terminal_prompts_without_echo() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cmd = format!(
        "{} app hash-password",
        crate::support::herald::herald_bin().display()
    );
    let mut terminal = Terminal::run(&cmd, dir.path());
    terminal.wait_for("Password:");
    terminal.type_keys(b"Pa55-word-here\n");
    terminal.wait_for("Again:");
    terminal.type_keys(b"Pa55-word-here\n");
    let (status, shown) = terminal.finish();
    assert!(status.success(), "{shown}");
    assert!(
        !shown.contains("Pa55-word-here"),
        "the password was echoed: {shown}"
    );
    let hash = shown
        .split_whitespace()
        .find(|w| w.starts_with("$argon2id$"))
        .expect("a hash printed");
    use argon2::{PasswordHash, PasswordVerifier};
    let parsed = PasswordHash::new(hash).expect("PHC string");
    assert!(
        argon2::Argon2::default()
            .verify_password(b"Pa55-word-here", &parsed)
            .is_ok()
    );
}

#[test]
fn ctrl_c_at_the_password_prompt_leaves_the_terminal_echoing() {
    // The shell prints the terminal's settings once herald, interrupted at its prompt, has
    // ended (both get the SIGINT; the trap runs after herald).
    let dir = tempfile::tempdir().expect("tempdir");
    let cmd = format!(
        "trap 'stty -a; exit 0' INT; {} app hash-password; echo not-interrupted",
        crate::support::herald::herald_bin().display()
    );
    let mut terminal = Terminal::run(&cmd, dir.path());
    terminal.wait_for("Password:");
    terminal.type_keys(b"\x03");
    let (status, shown) = terminal.finish();
    assert!(status.success(), "{shown}");
    assert!(
        !shown.contains("not-interrupted"),
        "herald was not interrupted: {shown}"
    );
    let settings: Vec<&str> = shown.split_whitespace().collect();
    assert!(
        settings.contains(&"echo") && !settings.contains(&"-echo"),
        "the terminal was left without echo: {shown}"
    );
}

#[test]
fn sts_show_exits_1_when_dns_does_not_answer() {
    // A name server that takes questions and never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let silent_tcp = std::net::TcpListener::bind(silent.local_addr().expect("addr")).ok();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = base_config(dir.path());
    crate::support::set(
        &mut cfg,
        "dns.servers",
        vec![silent.local_addr().expect("addr").to_string()],
    );
    let config = dir.path().join("herald.toml");
    std::fs::write(&config, toml::to_string(&cfg).expect("toml")).expect("write");
    let out = herald_in(
        dir.path(),
        &config,
        &[],
        &["sts", "show", "bank.example.test"],
    );
    drop(silent_tcp);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("look-up failed"),
        "{}",
        text(&out.stdout)
    );
}
