//! herald with its spool on the lazy file system, a receiving MX, and submitters that keep
//! sending until the power goes: what each cut costs is counted against what was answered 250.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::delivery::common::{World, arrivals};
use crate::submission::client::{Client, SmtpReply};
use crate::support::herald::{Herald, has_event};
use crate::support::lazyfs::LazyFs;
use crate::support::smtp_sink::{SinkOptions, SmtpSink};

/// Upper bound for any wait (never reached when things work).
const WAIT: Duration = Duration::from_secs(60);

/// One herald world whose spool is on a lazy file system.
pub struct PowerRig {
    pub world: World,
    pub sink: SmtpSink,
    pub lazy: Option<LazyFs>,
    pub herald: Option<Herald>,
    pub cfg: toml::Table,
    tls: Arc<rustls::ClientConfig>,
    /// Subjects answered 250, in order.
    pub acked: Arc<Mutex<Vec<String>>>,
    next: Arc<Mutex<u64>>,
    /// Power cuts so far (in service and during recovery).
    pub cuts: u64,
    pub recovery_cuts: u64,
}

/// What a run of cuts came to.
#[derive(Debug)]
pub struct Tally {
    pub cuts: u64,
    pub recovery_cuts: u64,
    pub acknowledged: usize,
    pub delivered: usize,
    pub lost: usize,
    pub duplicates: usize,
    /// Messages never answered 250 (in flight at a cut) that were delivered anyway.
    pub unacknowledged_delivered: usize,
}

impl PowerRig {
    /// A world with one MX and herald's spool directory mounted lazily (herald not started).
    pub fn new() -> PowerRig {
        let mut world = World::new(1);
        world.dns.add_mx("example.org", 10, "mx.example.org");
        let sink = world.sink("mx.example.org", SinkOptions::default());
        let tls = crate::hardening::certs(world.dir.path());
        let spool = world.dir.path().join("spool");
        std::fs::create_dir_all(&spool).expect("spool mountpoint");
        let lazy = LazyFs::mount(&spool);
        let cfg = world.config();
        PowerRig {
            world,
            sink,
            lazy: Some(lazy),
            herald: None,
            cfg,
            tls,
            acked: Arc::default(),
            next: Arc::default(),
            cuts: 0,
            recovery_cuts: 0,
        }
    }

    pub fn lazy(&self) -> &LazyFs {
        self.lazy.as_ref().expect("mounted")
    }

    /// Starts herald and waits until it is ready (it must be, whatever the cut left).
    pub fn start(&mut self) {
        self.herald = Some(Herald::start(self.world.dir.path(), self.cfg.clone()));
    }

    /// Starts herald with the power to go at the `n`th durability call of its recovery:
    /// herald is killed once it is ready or the power is off, and the disk restarted.
    pub fn start_cut_in_recovery(&mut self, n: u64) {
        self.lazy().cut_at_call(n);
        let config_path = self.world.dir.path().join("herald.toml");
        std::fs::write(&config_path, toml::to_string(&self.cfg).expect("toml")).expect("config");
        let mut h = Herald::spawn(&config_path, self.cfg.clone(), &["serve"]);
        let deadline = Instant::now() + WAIT;
        loop {
            let ready = h
                .log
                .lock()
                .expect("log")
                .iter()
                .any(|l| has_event(l, "ready"));
            if ready || self.lazy().is_off() || h.child.try_wait().ok().flatten().is_some() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "herald neither ready nor stopped"
            );
            // Polling three conditions at once (log, disk, process): no single blocking wait.
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.lazy().is_off() {
            self.recovery_cuts += 1;
        }
        self.herald = Some(h);
        self.cut_now();
    }

    /// Kills herald with `-9`; the disk keeps everything (no power cut).
    pub fn kill(&mut self) {
        if let Some(mut h) = self.herald.take() {
            h.kill9();
        }
    }

    /// Kills herald (the machine is gone) and brings the disk back with what it kept.
    pub fn cut_now(&mut self) {
        self.lazy().power_cut();
        if let Some(mut h) = self.herald.take() {
            if std::env::var("POWERCUT_DEBUG").is_ok() {
                let exited = h.child.try_wait().ok().flatten();
                let log = h.log.lock().expect("log");
                eprintln!(
                    "--- cut; herald exited: {exited:?}; last lines:\n{}",
                    log[log.len().saturating_sub(15)..].join("\n")
                );
            }
            h.kill9();
        }
        let lazy = self.lazy.take().expect("mounted");
        self.lazy = Some(lazy.restart());
    }

    /// Submits from `clients` connections, each sending small messages one after another
    /// until a reply is not 250 (the power went) or it has sent `max` of them. Returns the
    /// number answered 250.
    pub fn submit_until_cut(&self, clients: usize, max: usize, big_every: usize) -> usize {
        let addr = self
            .herald
            .as_ref()
            .expect("herald")
            .smtp_addr("submission");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let before = self.acked.lock().expect("acked").len();
        rt.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..clients {
                let (tls, acked, next) = (self.tls.clone(), self.acked.clone(), self.next.clone());
                tasks.spawn(async move {
                    let Some(mut c) = login(addr, tls).await else {
                        return;
                    };
                    for _ in 0..max {
                        let n = {
                            let mut next = next.lock().expect("next");
                            *next += 1;
                            *next
                        };
                        let subject = format!("cut-{n:06}");
                        let big = big_every > 0 && n % big_every as u64 == 0;
                        let reply = submit(&mut c, &subject, big).await.map(|r| r.code);
                        if reply != Some(250) {
                            return;
                        }
                        acked.lock().expect("acked").push(subject);
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
        });
        self.acked.lock().expect("acked").len() - before
    }

    /// Sends one message per subject over one session, in order (`big`: over 64 KB, so
    /// staged in a file); returns each end-of-data reply. Those answered 250 count as
    /// acknowledged.
    pub fn send_each(&self, subjects: &[&str], big: bool) -> Vec<SmtpReply> {
        let addr = self
            .herald
            .as_ref()
            .expect("herald")
            .smtp_addr("submission");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut c = Client::submission_login(addr, self.tls.clone()).await;
            let mut replies = Vec::new();
            for subject in subjects {
                let reply = submit(&mut c, subject, big)
                    .await
                    .expect("a reply to the message");
                if reply.code == 250 {
                    self.acked.lock().expect("acked").push(subject.to_string());
                }
                replies.push(reply);
            }
            replies
        })
    }

    /// Starts herald one last time and waits until every acknowledged message has arrived;
    /// counts what arrived twice.
    pub fn finish(&mut self) -> Tally {
        if self.herald.is_none() {
            self.start();
        }
        let acked: BTreeSet<String> = self
            .acked
            .lock()
            .expect("acked")
            .iter()
            .map(|s| format!("<{s}@example.test>"))
            .collect();
        let deadline = Instant::now() + WAIT;
        let seen: HashMap<String, usize> = loop {
            let seen = arrivals(&self.sink);
            let missing = acked.iter().filter(|s| !seen.contains_key(*s)).count();
            if missing == 0 || Instant::now() >= deadline {
                break seen;
            }
            let total: usize = seen.values().sum();
            self.sink
                .wait_for_messages(total + 1, Duration::from_secs(5));
        };
        let lost = acked.iter().filter(|s| !seen.contains_key(*s)).count();
        Tally {
            cuts: self.cuts,
            recovery_cuts: self.recovery_cuts,
            acknowledged: acked.len(),
            delivered: acked.iter().filter(|s| seen.contains_key(*s)).count(),
            lost,
            duplicates: seen.values().map(|n| n - 1).sum(),
            unacknowledged_delivered: seen.keys().filter(|s| !acked.contains(*s)).count(),
        }
    }
}

impl Drop for PowerRig {
    /// herald first (its open files would keep the file system busy), then the file system,
    /// before the test directory holding its mountpoint goes.
    fn drop(&mut self) {
        self.kill();
        self.lazy = None;
    }
}

/// One message over an open session: `Some(code)` of the end-of-data reply, `None` when the
/// connection failed or a command before it was refused.
async fn submit(c: &mut Client, subject: &str, big: bool) -> Option<SmtpReply> {
    let mut body = format!(
        "From: <app@example.test>\r\nTo: <bob@example.org>\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@example.test>\r\nDate: Mon, 7 Dec 2026 18:00:00 +0000\r\n\r\n\
         Sent until the power goes.\r\n"
    );
    if big {
        // Over the 64 KB staged in memory: a file of its own in the spool.
        body.push_str(
            &"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n".repeat(1100),
        );
    }
    for (line, code) in [
        ("MAIL FROM:<app@example.test>".to_string(), 250),
        ("RCPT TO:<bob@example.org>".to_string(), 250),
        ("DATA".to_string(), 354),
    ] {
        if try_cmd(c, &line).await? != code {
            return None;
        }
    }
    c.send(format!("{body}.\r\n")).await;
    c.try_reply().await
}

/// A STARTTLS session logged in as the demo app; `None` when herald refused a step or closed
/// the connection (the support client panics then: caught here as its task's failure).
async fn login(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> Option<Client> {
    match tokio::spawn(Client::submission_login(addr, tls)).await {
        Ok(c) => Some(c),
        Err(e) => {
            debug(&format!("login failed: {e}"));
            None
        }
    }
}

/// With `POWERCUT_DEBUG` set, says what happened.
fn debug(what: &str) {
    if std::env::var("POWERCUT_DEBUG").is_ok() {
        eprintln!("power cuts: {what}");
    }
}

async fn try_cmd(c: &mut Client, line: &str) -> Option<u16> {
    c.send(format!("{line}\r\n")).await;
    c.try_reply().await.map(|r| r.code)
}
