//! `herald dkim`: generate and list DKIM keys.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

use super::UsageError;
use crate::config::DkimAlgorithm;
use crate::signing::{align, keys};

/// `herald dkim` subcommands.
#[derive(Debug, Subcommand)]
pub enum DkimCommand {
    /// Generate key files and print the config block and DNS records to publish.
    Generate {
        /// Signing domain.
        #[arg(long)]
        domain: String,
        /// Selector (default: dated, e.g. s202611).
        #[arg(long)]
        selector: Option<String>,
        /// rsa, ed25519 or both.
        #[arg(long, default_value = "rsa")]
        algorithm: String,
        /// RSA key size (2048 or 4096).
        #[arg(long, default_value_t = 2048)]
        bits: u32,
    },
    /// List every configured key.
    List,
    /// Let a generated key sign: check that DNS serves its public key, then set
    /// `active = true` in the config file (comments and layout kept) and reload herald.
    Activate {
        /// Signing domain.
        domain: String,
        /// Selector of the key (as in `[[dkim.keys]]`).
        selector: String,
    },
}

/// Runs an `herald dkim` subcommand.
pub async fn run(config: &Path, cmd: DkimCommand) -> anyhow::Result<ExitCode> {
    let cfg = super::load_config(config)?;
    match cmd {
        DkimCommand::Generate {
            domain,
            selector,
            algorithm,
            bits,
        } => generate(config, &cfg, &domain, selector, &algorithm, bits),
        DkimCommand::List => Ok(list(&cfg)),
        DkimCommand::Activate { domain, selector } => {
            super::dkim_activate::activate(config, &cfg, &domain, &selector).await
        }
    }
}

fn generate(
    config_path: &Path,
    cfg: &crate::config::Config,
    domain: &str,
    selector: Option<String>,
    algorithm: &str,
    bits: u32,
) -> anyhow::Result<ExitCode> {
    let domain = align::normalize_domain(domain)
        .filter(|d| d.contains('.'))
        .ok_or_else(|| UsageError(format!("--domain {domain:?} is not a domain name")))?;
    let algorithms = match algorithm.to_ascii_lowercase().as_str() {
        "rsa" => vec![DkimAlgorithm::Rsa],
        "ed25519" => vec![DkimAlgorithm::Ed25519],
        "both" => vec![DkimAlgorithm::Rsa, DkimAlgorithm::Ed25519],
        other => {
            return Err(
                UsageError(format!("--algorithm {other:?}: use rsa, ed25519 or both")).into(),
            );
        }
    };
    if algorithms.contains(&DkimAlgorithm::Rsa) && !matches!(bits, 2048 | 3072 | 4096) {
        return Err(UsageError(format!(
            "--bits {bits}: RSA keys are 2048 (default), 3072 or 4096 bits; 1024 is refused as \
             too weak"
        ))
        .into());
    }
    let base = selector
        .unwrap_or_else(|| chrono::Utc::now().format("s%Y%m").to_string())
        .to_ascii_lowercase();
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    };
    if !valid(&base) {
        return Err(UsageError(format!(
            "--selector {base:?}: use letters, digits, '-' and '.' only"
        ))
        .into());
    }
    let mut plan = Vec::new();
    for &alg in &algorithms {
        // Two algorithms cannot share one DNS name, so `both` gets one selector each.
        let selector = if algorithms.len() > 1 {
            format!("{base}-{}", alg.as_str())
        } else {
            base.clone()
        };
        if cfg
            .dkim
            .keys
            .iter()
            .any(|k| k.domain.eq_ignore_ascii_case(&domain) && k.selector == selector)
        {
            return Err(UsageError(format!(
                "{}: selector {selector:?} of {domain} is already configured; pick another \
                 with --selector",
                config_path.display()
            ))
            .into());
        }
        let file = cfg
            .keys_dir()
            .join(format!("{domain}.{selector}.{}.pem", alg.as_str()));
        if file.exists() {
            anyhow::bail!(
                "{} already exists; refusing to overwrite a key (pick another --selector)",
                file.display()
            );
        }
        plan.push((alg, selector, file));
    }

    let mut config_block = String::new();
    let mut records = String::new();
    super::service_files::warn_if_not_service_user(cfg);
    let service = super::service_files::ServiceUser::of(cfg);
    for (alg, selector, file) in plan {
        let generated = keys::generate(alg, bits)?;
        let new_dir = file.parent().filter(|d| !d.exists());
        keys::write_private_key(&file, &generated.pem).map_err(|e| {
            let fix = if e.kind() == std::io::ErrorKind::PermissionDenied {
                "; run this as the service user (`sudo -u herald herald …`) or as root"
            } else {
                ""
            };
            anyhow::anyhow!("{}: cannot write the key: {e}{fix}", file.display())
        })?;
        for path in new_dir.into_iter().chain([file.as_path()]) {
            super::service_files::give_to_service_user(path, service.as_ref()).map_err(|e| {
                anyhow::anyhow!(
                    "{}: cannot give it to the service user: {e}; run `chown` on it yourself",
                    path.display()
                )
            })?;
        }
        println!(
            "Wrote {} ({} {} bits, mode 0600).",
            file.display(),
            keys::display_algorithm(alg),
            generated.parsed.bits
        );
        let _ = write!(
            config_block,
            "\n[[dkim.keys]]\ndomain = \"{domain}\"\nselector = \"{selector}\"\nalgorithm = \
             \"{}\"\nfile = \"{}\"\nactive = false   # `herald dkim activate {domain} {selector}` once \
             DNS serves the record below\n",
            alg.as_str(),
            crate::config::paths::relative_to(&file, &crate::config::paths::base_dir(config_path))
                .display()
                .to_string()
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
        );
        let _ = writeln!(
            records,
            "{}",
            keys::zone_txt_record(
                &format!("{selector}._domainkey.{domain}"),
                &generated.parsed.txt()
            )
        );
    }
    println!("\nAdd to {}:\n{config_block}", config_path.display());
    println!("Publish in DNS (zone-file syntax):\n\n{records}");
    println!(
        "Then wait for the record's TTL and run `herald dkim activate {domain} <selector>`: it \
         checks that DNS serves the key, sets active = true and reloads herald. When rotating, \
         keep the old selector published (active = false) for a week before removing it."
    );
    Ok(ExitCode::SUCCESS)
}

fn list(cfg: &crate::config::Config) -> ExitCode {
    let mut rows = vec![[
        "DOMAIN".to_string(),
        "SELECTOR".into(),
        "ALGORITHM".into(),
        "BITS".into(),
        "FILE".into(),
        "ACTIVE".into(),
        "STATUS".into(),
    ]];
    let mut bad = 0;
    for k in &cfg.dkim.keys {
        let (bits, status) = match keys::load_file(&k.file, k.algorithm) {
            Ok(parsed) => (parsed.bits.to_string(), "ok".to_string()),
            Err(problem) => {
                let missing = !k.file.exists();
                if missing && cfg.dkim.allow_dev_keys {
                    (
                        "-".into(),
                        "missing: generated at start (allow_dev_keys)".into(),
                    )
                } else {
                    bad += 1;
                    ("-".into(), problem.to_string())
                }
            }
        };
        rows.push([
            k.domain.clone(),
            k.selector.clone(),
            k.algorithm.as_str().into(),
            bits,
            k.file.display().to_string(),
            if k.active { "yes" } else { "no" }.into(),
            status,
        ]);
    }
    if cfg.dkim.keys.is_empty() {
        println!("No DKIM keys configured; create one with `herald dkim generate --domain D`.");
        return ExitCode::SUCCESS;
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
            }
        }
        println!("{}", line.trim_end());
    }
    if bad > 0 {
        eprintln!("herald: {bad} key(s) unusable; `herald serve` will refuse to start");
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
