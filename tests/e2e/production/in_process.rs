//! A node started in-process through the library (`herald::node`), as `herald serve` starts
//! it: the reload is all or nothing and says what it applied; shutdown returns.

use crate::support::herald::base_config;
use crate::support::set;

fn write(path: &std::path::Path, cfg: &toml::Table) {
    std::fs::write(path, toml::to_string(cfg).expect("toml")).expect("write config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_in_process_reloads_all_or_nothing_and_stops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = base_config(dir.path());
    let path = dir.path().join("herald.toml");
    write(&path, &cfg);
    let loaded = herald::config::Config::load(&path).expect("config loads");
    let mut node = herald::node::Node::start(&path, loaded)
        .await
        .expect("the node starts");

    let mut broken = cfg.clone();
    set(&mut broken, "smtp.max_recipients", "many");
    write(&path, &broken);
    let refused = node.reload().expect_err("a bad file is refused");
    assert!(refused.reason.contains("max_recipients"), "{refused}");
    assert_eq!(node.config().smtp.max_recipients, 100, "nothing changed");

    let mut changed = cfg.clone();
    set(&mut changed, "smtp.max_recipients", 5);
    write(&path, &changed);
    let applied = node.reload().expect("a good file is applied");
    assert!(
        applied.applied.iter().any(|a| a.starts_with("smtp limits")),
        "{applied:?}"
    );
    assert_eq!(node.config().smtp.max_recipients, 5);
    node.shutdown().await;
}
