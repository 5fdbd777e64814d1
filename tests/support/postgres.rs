//! A real PostgreSQL for cluster tests, from Debian's `postgresql` package (version 15,
//! binaries in `/usr/lib/postgresql/15/bin`): `initdb` into a temporary directory, the server
//! listening on a random loopback address and port (and a Unix socket in that directory),
//! password authentication over TCP for the `herald` role, stopped when dropped.
//!
//! PostgreSQL refuses to run as root; when the tests run as root (CI containers do), initdb
//! and the server run as `nobody` (through `setpriv`), in a directory handed over to it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's PostgreSQL 15 binaries live.
const BIN: &str = "/usr/lib/postgresql/15/bin";
/// The role, database and password herald connects with.
pub const ROLE: &str = "herald";
const PASSWORD: &str = "cluster-test-password";

/// A running PostgreSQL server in a temporary directory.
pub struct Postgres {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// The loopback address it listens on.
    pub addr: SocketAddr,
}

impl Postgres {
    /// initdb, start, wait until it accepts connections, create the `herald` database.
    pub fn start() -> Postgres {
        let initdb = Path::new(BIN).join("initdb");
        assert!(
            initdb.exists(),
            "PostgreSQL 15 is not installed ({} missing): install the Debian package \
             postgresql (`apt-get install postgresql`; tests/run does it for you)",
            initdb.display()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, PASSWORD).expect("write pwfile");
        hand_over(dir.path());
        hand_over(&pwfile);
        let out = as_postgres_user(&initdb)
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-U", ROLE, "-E", "UTF8", "--no-sync", "--locale=C"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let addr = super::free_addr();
        let mut pg = Postgres {
            dir,
            child: None,
            addr,
        };
        pg.run();
        let out = pg
            .psql_command("postgres")
            .args(["-c", &format!("CREATE DATABASE {ROLE}")])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "CREATE DATABASE failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg
    }

    /// Starts the server (again) on the same directory and address; waits until it is ready.
    pub fn run(&mut self) {
        assert!(self.child.is_none(), "PostgreSQL is already running");
        let log = std::fs::File::create(self.log_path()).expect("postgres log");
        let child = as_postgres_user(&Path::new(BIN).join("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-c", &format!("listen_addresses={}", self.addr.ip())])
            .args(["-c", &format!("port={}", self.addr.port())])
            .args([
                "-c",
                &format!("unix_socket_directories={}", self.dir.path().display()),
            ])
            .args(["-c", "max_connections=200", "-c", "shared_buffers=16MB"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = Command::new(Path::new(BIN).join("pg_isready"))
                .arg("-h")
                .arg(self.addr.ip().to_string())
                .arg("-p")
                .arg(self.addr.port().to_string())
                .arg("-q")
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("PostgreSQL exited ({status}) at start:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL not ready within 60s:\n{}",
                self.log()
            );
            // pg_isready has no wait-with-deadline mode; poll it.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (fast shutdown: open transactions are rolled back, clients cut).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGINT = PostgreSQL's fast shutdown.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGINT);
            }
            let _ = child.wait();
        }
    }

    /// The URL herald is given in `[cluster] database_url` (no password in it).
    pub fn url(&self) -> String {
        format!(
            "postgresql://{ROLE}@{}:{}/{ROLE}",
            self.addr.ip(),
            self.addr.port()
        )
    }

    /// A file holding the password, for `[cluster] password_file`.
    pub fn password_file(&self, dir: &Path) -> PathBuf {
        let path = dir.join("db-password");
        std::fs::write(&path, format!("{PASSWORD}\n")).expect("write password file");
        path
    }

    /// Runs one SQL statement over TCP (password authentication, as herald connects) and
    /// returns its rows, one per line, columns separated by `|`.
    pub fn query(&self, sql: &str) -> String {
        let out = self
            .psql_command(ROLE)
            .args(["-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    fn psql_command(&self, database: &str) -> Command {
        let mut cmd = Command::new(Path::new(BIN).join("psql"));
        cmd.arg("-h")
            .arg(self.addr.ip().to_string())
            .arg("-p")
            .arg(self.addr.port().to_string())
            .args(["-U", ROLE, "-d", database])
            .env("PGPASSWORD", PASSWORD)
            .env("PGCONNECT_TIMEOUT", "10");
        cmd
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGQUIT = immediate shutdown: nothing to keep.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGQUIT);
            }
            let _ = child.wait();
        }
    }
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// A command run as the unprivileged user PostgreSQL needs when the tests run as root.
fn as_postgres_user(program: &Path) -> Command {
    let mut cmd = if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(program);
        c
    } else {
        Command::new(program)
    };
    // The server and initdb look at the working directory; root's may be closed to nobody.
    cmd.current_dir("/");
    cmd
}

/// Gives a path to `nobody` when running as root (see the module documentation).
fn hand_over(path: &Path) {
    if is_root() {
        std::os::unix::fs::chown(path, Some(65534), Some(65534)).expect("chown to nobody");
    }
}
