//! With `[cluster]` the events go to the cluster's PostgreSQL too, and `herald log search`
//! reads them from there (so any node answers for every node).

use super::rig::{Rig, submit, wait_search};
use crate::support::herald::Herald;
use crate::support::postgres::Postgres;

#[test]
fn in_a_cluster_events_are_in_postgresql_and_searched_there() {
    let pg = Postgres::start();
    let rig = Rig::new(204);
    let mut cfg = rig.config();
    let dir = rig.w.dir.path();
    crate::support::set(&mut cfg, "cluster.database_url", pg.url());
    crate::support::set(
        &mut cfg,
        "cluster.password_file",
        pg.password_file(dir).display().to_string(),
    );
    crate::support::set(&mut cfg, "cluster.tls", "disable");
    crate::support::set(&mut cfg, "cluster.node_id", "node-a");
    let h = Herald::start(dir, cfg);
    submit(&h, "bob@example.net", "cluster");
    let found = wait_search(
        &h,
        &["--recipient", "bob@example.net", "--status", "delivered"],
        1,
    );
    assert_eq!(found[0]["node"], "node-a");
    let rows =
        pg.query("SELECT kind FROM herald_events WHERE recipient = 'bob@example.net' ORDER BY id");
    assert_eq!(
        rows.split_whitespace().collect::<Vec<_>>(),
        ["accepted", "delivered"],
        "{rows}"
    );
}
