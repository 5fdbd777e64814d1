//! Unit tests of configuration loading, validation and environment overrides.

use super::*;

fn write(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("herald.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn shipped_configs_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cfg = Config::load(&root.join("config/herald.toml")).unwrap();
    assert!(cfg.apps.contains_key("demo"));
    assert!(cfg.smtp.submission.is_some());
}

#[test]
fn bad_values_name_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "[apps.billing]\npassword_hash = \"plain\"\nsenders = [\"@example.com\"]\n",
    );
    let e = Config::load(&p).unwrap_err();
    assert_eq!(e.key, "apps.billing.password_hash");
    assert!(e.to_string().starts_with(&p.display().to_string()));

    let p = write(dir.path(), "[smtp]\nmax_recipients = \"many\"\n");
    let e = Config::load(&p).unwrap_err();
    assert!(e.to_string().contains("max_recipients"), "{e}");

    let p = write(dir.path(), "[smtp]\nsubmision = \"127.0.0.1:25\"\n");
    let e = Config::load(&p).unwrap_err();
    assert!(e.to_string().contains("submision"), "{e}");

    let p = write(dir.path(), "[delivery]\nretry_schedule = [\"soon\"]\n");
    let e = Config::load(&p).unwrap_err();
    assert!(e.to_string().contains("soon"), "{e}");

    let e = Config::load(&dir.path().join("missing.toml")).unwrap_err();
    assert!(e.problem.contains("not found"));

    let p = write(dir.path(), "[smtp]\ntls_handshake_timeout = \"0s\"\n");
    let e = Config::load(&p).unwrap_err();
    assert_eq!(e.key, "smtp.tls_handshake_timeout");
}

#[test]
fn durations_and_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "[delivery]\nretry_schedule = [\"1s\", \"2m\"]\nmax_age = \"1h\"\n",
    );
    let cfg = Config::load(&p).unwrap();
    assert_eq!(
        cfg.delivery.retry_schedule,
        vec![Duration::from_secs(1), Duration::from_secs(120)]
    );
    assert_eq!(cfg.delivery.max_age, Duration::from_secs(3600));
    assert_eq!(cfg.smtp.command_timeout, Duration::from_secs(300));
    assert_eq!(cfg.smtp.tls_handshake_timeout, Duration::from_secs(10));
    assert_eq!(cfg.smtp.auth_max_user_failures, 20);
    // Relative paths resolve against the config file's directory, not the current one.
    let base = paths::base_dir(&p);
    assert_eq!(cfg.spool_dir(), base.join("data/spool"));
    assert!(cfg.spool_dir().is_absolute());
    assert_eq!(cfg.admin_token_file(), base.join("data/admin.token"));
}

#[test]
fn relative_paths_follow_the_config_file_and_name_servers_default_to_port_53() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "[server]\ndata_dir = \"var\"\n[tls]\ncert = \"/etc/ssl/herald.crt\"\n\
         [dns]\nservers = [\"192.0.2.53\", \"192.0.2.54:5353\", \"2001:db8::53\", \"[2001:db8::54]:54\"]\n\
         [[dkim.keys]]\ndomain = \"example.com\"\nselector = \"s1\"\nalgorithm = \"rsa\"\n\
         file = \"keys/s1.pem\"\n",
    );
    let cfg = Config::load(&p).unwrap();
    let base = paths::base_dir(&p);
    assert_eq!(cfg.server.data_dir, base.join("var"));
    assert_eq!(cfg.tls.cert, PathBuf::from("/etc/ssl/herald.crt"));
    assert_eq!(cfg.tls.key, base.join("certs/herald.key"));
    assert_eq!(cfg.dkim.keys[0].file, base.join("keys/s1.pem"));
    assert_eq!(cfg.keys_dir(), base.join("var/keys"));
    let servers: Vec<String> = cfg.dns.servers.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        servers,
        [
            "192.0.2.53:53",
            "192.0.2.54:5353",
            "[2001:db8::53]:53",
            "[2001:db8::54]:54"
        ]
    );
    let p = write(dir.path(), "[dns]\nservers = [\"resolver.example\"]\n");
    let e = Config::load(&p).unwrap_err();
    assert!(e.problem.contains("not a name server address"), "{e}");
}

#[test]
fn environment_overrides_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "[spf]\ninclude = \"_spf.file.example\"\n");
    // Only this test reads these keys, so the process-wide environment is safe to touch.
    unsafe {
        std::env::set_var("HERALD__SPF__INCLUDE", "_spf.env.example");
        std::env::set_var("HERALD__SPF__ADDRESSES", "192.0.2.1/32,2001:db8::/64");
    }
    let cfg = Config::load(&p).unwrap();
    unsafe {
        std::env::remove_var("HERALD__SPF__INCLUDE");
        std::env::remove_var("HERALD__SPF__ADDRESSES");
    }
    assert_eq!(cfg.spf.include, "_spf.env.example");
    assert_eq!(cfg.spf.addresses.len(), 2);
}

#[test]
fn dane_defaults_and_trust_resolver_ad_only_with_loopback_resolvers() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::load(&write(dir.path(), "")).unwrap();
    assert!(cfg.dane.enabled, "DANE is on by default");
    assert!(!cfg.dane.trust_resolver_ad, "herald validates by default");

    let p = write(
        dir.path(),
        "[dns]\nservers = [\"127.0.0.1:5353\"]\n[dane]\ntrust_resolver_ad = true\n",
    );
    assert!(Config::load(&p).unwrap().dane.trust_resolver_ad);

    let p = write(
        dir.path(),
        "[dns]\nservers = [\"192.0.2.53\"]\n[dane]\ntrust_resolver_ad = true\n",
    );
    let e = Config::load(&p).unwrap_err();
    assert_eq!(e.key, "dane.trust_resolver_ad");
    assert!(e.to_string().contains("192.0.2.53:53"), "{e}");

    let p = write(dir.path(), "[dane]\ntrust_resolver_ad = true\n");
    assert_eq!(Config::load(&p).unwrap_err().key, "dane.trust_resolver_ad");

    let p = write(dir.path(), "[dane]\ntrust_anchor = \"missing.keys\"\n");
    let e = Config::load(&p).unwrap_err();
    assert_eq!(e.key, "dane.trust_anchor");
    assert!(e.to_string().contains("missing.keys"), "{e}");
}

#[test]
fn cluster_section_is_optional_validated_and_never_holds_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "[server]\nhostname = \"relay.example\"\n");
    assert!(Config::load(&p).unwrap().cluster.is_none());

    let p = write(
        dir.path(),
        "[cluster]\ndatabase_url = \"postgresql://herald@db.example:5432/herald\"\n\
         node_id = \"relay-1\"\nlease = \"30s\"\n",
    );
    let cluster = Config::load(&p).unwrap().cluster.unwrap();
    assert_eq!(cluster.node_id(), "relay-1");
    assert_eq!(cluster.lease, Duration::from_secs(30));
    assert_eq!(cluster.tls, ClusterTls::Prefer);
    assert_eq!(cluster.pool_size, 16);

    for (text, key, words) in [
        (
            "database_url = \"postgresql://herald:secret@db.example/herald\"",
            "cluster.database_url",
            "password_file",
        ),
        (
            "database_url = \"not a url ===\"",
            "cluster.database_url",
            "PostgreSQL",
        ),
        (
            "database_url = \"host=db.example\"\nlease = \"1s\"",
            "cluster.lease",
            "at least 2s",
        ),
        (
            "database_url = \"host=db.example\"\nnode_id = \"a b\"",
            "cluster.node_id",
            "letters",
        ),
        (
            "database_url = \"host=db.example\"\ntls = \"maybe\"",
            "cluster",
            "maybe",
        ),
    ] {
        let p = write(dir.path(), &format!("[cluster]\n{text}\n"));
        let e = Config::load(&p).unwrap_err();
        assert!(e.key.starts_with(key), "{text}: {e}");
        assert!(e.to_string().contains(words), "{text}: {e}");
        assert!(!e.to_string().contains("secret"), "{e}");
    }
    // Without a node_id, the host name.
    let p = write(
        dir.path(),
        "[cluster]\ndatabase_url = \"host=/run/postgresql\"\n",
    );
    assert!(
        !Config::load(&p)
            .unwrap()
            .cluster
            .unwrap()
            .node_id()
            .is_empty()
    );
}

#[test]
fn log_levels_and_filters_are_accepted_and_bare_words_refused() {
    let dir = tempfile::tempdir().unwrap();
    for good in [
        "info",
        "WARN",
        "info,herald=debug",
        "herald::smtp_server=trace,warn",
        "off",
    ] {
        let p = write(dir.path(), &format!("[server]\nlog_level = \"{good}\"\n"));
        assert!(Config::load(&p).is_ok(), "{good}");
    }
    for bad in ["verbose", "info,verbose", "herald=loud", ""] {
        let p = write(dir.path(), &format!("[server]\nlog_level = \"{bad}\"\n"));
        let e = Config::load(&p).unwrap_err();
        assert_eq!(e.key, "server.log_level", "{bad}: {e}");
        assert!(e.problem.contains("\"info,herald=debug\""), "{e}");
    }
}

#[test]
fn sender_wildcards_are_refused_with_the_form_that_works() {
    assert!(sender_pattern_problem("@example.com").is_none());
    assert!(sender_pattern_problem("billing@example.com").is_none());
    let p = sender_pattern_problem("*@example.com").unwrap();
    assert!(p.contains("write \"@example.com\""), "{p}");
    let p = sender_pattern_problem("@*.example.com").unwrap();
    assert!(p.contains("wildcard"), "{p}");
}
