//! The schema: applied by herald at start, once however often nodes start, and a node refuses
//! a schema newer than it knows.

use std::time::Duration;

use super::common::node_config;
use crate::support::herald::Herald;
use crate::support::postgres::Postgres;

#[test]
fn herald_applies_the_schema_once_and_refuses_a_newer_one() {
    let pg = Postgres::start();
    let a = tempfile::tempdir().expect("tempdir");
    let node = Herald::start(a.path(), node_config(a.path(), &pg, "node-a"));
    let log = node.log.lock().expect("log").join("\n");
    assert!(log.contains("schema up to date"), "{log}");
    assert_eq!(
        pg.query("SELECT version, name, applied_by FROM herald_schema ORDER BY version"),
        "1|spool|node-a\n2|shared_state|node-a\n3|dmarc_verified|node-a\n4|dmarc_totals|node-a\n5|webhook_outbox|node-a\n6|node_leases|node-a\n7|shaping|node-a\n8|queue_summary|node-a"
    );
    assert_eq!(pg.query("SELECT count(*) FROM herald_messages"), "0");

    // A database from before migration 7, where herald created herald_shaping on first use:
    // the migration adopts the table and its rows.
    // (Migration 8 is undone in the record too: a database before 7 had neither.)
    pg.query("DELETE FROM herald_schema WHERE version >= 7");
    pg.query(
        "INSERT INTO herald_shaping (destination, held_until, reason, seq, node) \
         VALUES ('google', now(), '421 4.7.28 slow down', 3, 'node-a')",
    );

    // A second node starting on that database applies only the missing steps.
    let b = tempfile::tempdir().expect("tempdir");
    let _second = Herald::start(b.path(), node_config(b.path(), &pg, "node-b"));
    assert_eq!(
        pg.query(
            "SELECT version, applied_by FROM herald_schema WHERE version >= 6 ORDER BY version"
        ),
        "6|node-a\n7|node-b\n8|node-b"
    );
    assert_eq!(
        pg.query("SELECT destination, seq FROM herald_shaping"),
        "google|3"
    );

    // A newer herald has migrated the database: this one refuses to start, and says why.
    pg.query("INSERT INTO herald_schema (version, name, applied_by) VALUES (999, 'future', 'x')");
    let c = tempfile::tempdir().expect("tempdir");
    let cfg = node_config(c.path(), &pg, "node-c");
    let path = c.path().join("herald.toml");
    std::fs::write(&path, toml::to_string(&cfg).expect("toml")).expect("write config");
    let mut old = Herald::spawn(&path, cfg, &["serve"]);
    let status = old.wait_exit(Duration::from_secs(30));
    assert!(!status.success());
    let log = old.log.lock().expect("log").join("\n");
    assert!(
        log.contains("schema is at version 999, newer than this herald knows"),
        "{log}"
    );
    assert!(
        !log.contains("cluster-test-password"),
        "password logged: {log}"
    );
}
