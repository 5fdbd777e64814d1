//! `herald dkim activate DOMAIN SELECTOR`: the last step of a DKIM roll-out (generate →
//! publish → wait → activate). It refuses while DNS does not serve the key's public half — a key
//! that signs before receivers can fetch it makes every signature fail — then sets
//! `active = true` in the config file in place (comments and layout kept) and asks the running
//! herald to reload.

use std::path::Path;
use std::process::ExitCode;

use crate::config::Config;
use crate::dns::check::{self, Status};
use crate::signing::Signer;
use crate::signing::align::normalize_domain;

/// Checks DNS, edits the config, reloads. Exit 0 when the key is active afterwards, 1 when
/// DNS does not serve it (the file is left untouched) or the file cannot be edited.
pub async fn activate(
    config_path: &Path,
    cfg: &Config,
    domain: &str,
    selector: &str,
) -> anyhow::Result<ExitCode> {
    let domain = normalize_domain(domain).unwrap_or_else(|| domain.to_ascii_lowercase());
    let selector = selector.to_ascii_lowercase();
    let Some(configured) = cfg.dkim.keys.iter().find(|k| {
        normalize_domain(&k.domain).as_deref() == Some(domain.as_str())
            && k.selector.eq_ignore_ascii_case(&selector)
    }) else {
        eprintln!(
            "herald: {}: no [[dkim.keys]] entry for domain {domain:?} selector {selector:?}; \
             create one with `herald dkim generate --domain {domain}`",
            config_path.display()
        );
        return Ok(ExitCode::from(1));
    };
    if configured.active {
        println!("{selector}._domainkey.{domain} is already active; nothing to do.");
        return Ok(ExitCode::SUCCESS);
    }
    let signer = Signer::load(cfg)?;
    let Some(key) = signer.published_keys().into_iter().find(|k| {
        normalize_domain(&k.domain).as_deref() == Some(domain.as_str())
            && k.selector.eq_ignore_ascii_case(&selector)
    }) else {
        anyhow::bail!("the key {selector} of {domain} did not load");
    };
    let auth = crate::resolver::authenticator(&cfg.dns)?;
    let finding = check::dkim::check_published(&auth, &key).await;
    if finding.status != Status::Pass {
        eprintln!("herald: not activated: {}", finding.message);
        if let Some(fix) = &finding.fix {
            eprintln!("  fix: {fix}");
        }
        eprintln!(
            "  then wait for the record's TTL and run `herald dkim activate {domain} {selector}` \
             again; {} is unchanged",
            config_path.display()
        );
        return Ok(ExitCode::from(1));
    }
    println!("{}", finding.message);
    super::service_files::warn_if_not_service_user(cfg);
    set_active(config_path, &domain, &selector)?;
    println!(
        "{}: set active = true for {selector}._domainkey.{domain}",
        config_path.display()
    );
    match super::reload::request(cfg).await {
        Ok(super::reload::Requested::Reloaded(detail)) => {
            println!("herald reloaded: {detail}; it now signs {domain} mail with {selector}");
        }
        Ok(super::reload::Requested::NotRunning(why)) => {
            println!("herald is not running ({why}); the key signs from its next start")
        }
        Err(e) => {
            eprintln!(
                "herald: the config is updated but the running herald did not reload: {e:#}; \
                 run `herald reload` (or `systemctl reload herald`)"
            );
            return Ok(ExitCode::from(1));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Sets `active = true` on the `[[dkim.keys]]` entry of `domain`/`selector` in the file,
/// keeping every comment and the layout; written to a temporary file and renamed into place so
/// a crash leaves the old or the new file, never half of one.
fn set_active(config_path: &Path, domain: &str, selector: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config_path)
        .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", config_path.display()))?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| anyhow::anyhow!("{}: cannot parse: {e}", config_path.display()))?;
    let keys = doc
        .get_mut("dkim")
        .and_then(|d| d.get_mut("keys"))
        .and_then(|k| k.as_array_of_tables_mut())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{}: no [[dkim.keys]] tables to edit (is the key set elsewhere?)",
                config_path.display()
            )
        })?;
    let entry = keys
        .iter_mut()
        .find(|t| {
            let get = |k: &str| t.get(k).and_then(|v| v.as_str()).unwrap_or_default();
            normalize_domain(get("domain")).as_deref() == Some(domain)
                && get("selector").eq_ignore_ascii_case(selector)
        })
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{}: no [[dkim.keys]] table for {selector} of {domain}",
                config_path.display()
            )
        })?;
    // Keep the spacing around the value; its old trailing comment ("set to true once …")
    // no longer applies.
    let prefix = entry
        .get("active")
        .and_then(|v| v.as_value())
        .and_then(|v| v.decor().prefix())
        .and_then(|p| p.as_str())
        .unwrap_or(" ")
        .to_string();
    let mut value = toml_edit::Value::from(true);
    value.decor_mut().set_prefix(prefix);
    value.decor_mut().set_suffix(format!(
        "   # activated by `herald dkim activate` on {}",
        chrono::Utc::now().format("%Y-%m-%d")
    ));
    entry.insert("active", toml_edit::Item::Value(value));
    write_replacing(config_path, doc.to_string().as_bytes())
}

/// Replaces `path` with `bytes` atomically, keeping its owner, group and mode (run as root,
/// the service user must still be able to read it).
fn write_replacing(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    super::service_files::replace_keeping_owner(path, bytes)
        .map_err(|e| anyhow::anyhow!("{}: cannot replace it: {e}", path.display()))
}
