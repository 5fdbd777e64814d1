//! PostgreSQL dropping herald's connections mid-transaction (issue 28): while apps submit,
//! the test terminates every backend herald holds, again and again. Every message answered
//! 250 is delivered, every refusal is a 4xx the app retries, and herald reconnects by itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::spool::{body, nodes, queued, seen, wait_until};
use crate::delivery::common::World;
use crate::submission::client::Client;
use crate::support::postgres::Postgres;
use crate::support::smtp_sink::SinkOptions;

/// Ends every session herald has open (its `application_name` is `herald <node>`); one `t`
/// per backend terminated.
const TERMINATE: &str = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE application_name LIKE 'herald %' AND pid <> pg_backend_pid()";

/// Each submitter's messages, one connection each.
const SUBMITTERS: usize = 3;
const PER_SUBMITTER: usize = 12;

#[test]
fn terminated_database_sessions_lose_no_acknowledged_mail_and_herald_reconnects_by_itself() {
    let mut world = World::new(1);
    let sink = world.sink("mx.example.org", SinkOptions::default());
    world.dns.add_mx("example.org", 10, "mx.example.org");
    let pg = Postgres::start();
    let nodes = nodes(&world, &pg, 1, "3s");
    let node = &nodes[0];
    let rt = tokio::runtime::Runtime::new().expect("runtime");

    // (tag, the end-of-data reply, or the first refusal before it)
    let outcomes: Arc<Mutex<Vec<(String, u16, String)>>> = Arc::default();
    let done = AtomicBool::new(false);
    let mut terminated = 0;
    let (addr, tls) = (node.herald.smtp_addr("submission"), node.tls.clone());
    // Logged in before the first session ends (a login is not what is tested here).
    let clients: Vec<Client> = rt.block_on(async {
        let mut clients = Vec::new();
        for _ in 0..SUBMITTERS {
            clients.push(Client::submission_login(addr, tls.clone()).await);
        }
        clients
    });
    std::thread::scope(|s| {
        s.spawn(|| {
            let _done = DoneWhenDropped(&done);
            rt.block_on(async {
                let mut tasks = tokio::task::JoinSet::new();
                for (c, mut client) in clients.into_iter().enumerate() {
                    let outcomes = outcomes.clone();
                    tasks.spawn(async move {
                        for i in 0..PER_SUBMITTER {
                            let tag = format!("term-{c}-{i}");
                            let (code, text) = submit_one(&mut client, &tag).await;
                            outcomes.lock().expect("outcomes").push((tag, code, text));
                        }
                    });
                }
                while let Some(r) = tasks.join_next().await {
                    r.expect("a submitter");
                }
            });
        });
        // Every two answers, herald's sessions go (whatever they are doing: idle in the pool,
        // mid-INSERT, at COMMIT).
        let mut last = 0;
        while !done.load(Ordering::SeqCst) {
            let answered = outcomes.lock().expect("outcomes").len();
            if answered >= last + 2 {
                last = answered;
                terminated += pg.query(TERMINATE).lines().filter(|l| *l == "t").count();
            } else {
                // Polling the submitters' progress (another thread) for the next round.
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });

    let outcomes = outcomes.lock().expect("outcomes").clone();
    let acked: Vec<&String> = outcomes
        .iter()
        .filter(|(_, code, _)| *code == 250)
        .map(|(tag, _, _)| tag)
        .collect();
    let refused: Vec<&(String, u16, String)> = outcomes
        .iter()
        .filter(|(_, code, _)| *code != 250)
        .collect();
    eprintln!(
        "{} submissions, {} answered 250, {} refused, {terminated} database sessions terminated",
        outcomes.len(),
        acked.len(),
        refused.len()
    );
    assert!(terminated >= 3, "the test ended herald's sessions");
    for (tag, code, text) in &refused {
        assert!((400..500).contains(code), "{tag}: {code} {text}");
    }

    // No restart: herald takes mail again on fresh connections and delivers everything.
    let after = rt.block_on(async {
        let mut c = Client::submission_login(addr, tls).await;
        submit_one(&mut c, "after-terminations").await
    });
    assert_eq!(after.0, 250, "{}", after.1);
    wait_until("every acknowledged message to be delivered", || {
        let seen = seen(&sink);
        acked.iter().all(|t| seen.contains_key(*t)) && seen.contains_key("after-terminations")
    });
    wait_until("the queue to empty", || queued(&pg) == 0);
    // A 451 at COMMIT may answer a message the server did commit: delivered all the same.
    let seen = seen(&sink);
    let refused_delivered = refused.iter().filter(|r| seen.contains_key(&r.0)).count();
    eprintln!("of the refused, {refused_delivered} delivered all the same");
}

/// One message over an open session; a refusal before DATA ends the transaction (RSET) and
/// is the outcome.
async fn submit_one(c: &mut Client, tag: &str) -> (u16, String) {
    for (line, want) in [
        "MAIL FROM:<app@example.test>".to_string(),
        "RCPT TO:<r@example.org>".to_string(),
        "DATA".to_string(),
    ]
    .into_iter()
    .zip([250, 250, 354])
    {
        let r = c.cmd(&line).await;
        if r.code != want {
            c.expect("RSET", 250).await;
            return (r.code, r.text);
        }
    }
    c.send(format!("{}\r\n.\r\n", body(tag))).await;
    let r = c.reply().await;
    (r.code, r.text)
}

/// Tells the terminating loop to stop when the submitters end, also when one panics.
pub(crate) struct DoneWhenDropped<'a>(pub(crate) &'a AtomicBool);

impl Drop for DoneWhenDropped<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}
