//! One-click unsubscribe (RFC 8058) for apps with `unsubscribe = "one-click"`: the headers
//! herald adds before signing, the pages behind the link, and the record of who left.
//!
//! - Submission adds `List-Unsubscribe: <https://HOST/u/TOKEN>, <mailto:…>` and
//!   `List-Unsubscribe-Post: List-Unsubscribe=One-Click` to a message with one recipient,
//!   unless the app set `List-Unsubscribe` itself; DKIM then covers both (`h=`).
//! - `POST /u/TOKEN` records the unsubscribe (idempotent); `GET /u/TOKEN` only shows a page
//!   with a button, because link scanners fetch every URL they see.
//! - Mail to `unsubscribe@<feedback domain>` with the token in its Subject (the `mailto:`
//!   variant) is recorded the same way by the feedback listener ([`mailto`]).
//! - Recording is the suppression list's (`crate::suppress`, reason `unsubscribe`, scoped to
//!   the app and the sending domain): the next submission from that app to that address is
//!   refused at RCPT there.
//!
//! The running instance is installed once per process ([`install`]) so submission sessions
//! find it without threading it through every listener.

pub(crate) mod mailto;
pub(crate) mod token;

use std::path::Path;
use std::sync::{Arc, OnceLock};

use self::token::{Sealer, Subscription};
use crate::config::{Config, UnsubscribeMode};
use crate::suppress::{Reason, Suppressions};

/// Everything one-click unsubscribe needs at run time.
pub(crate) struct OneClick {
    sealer: Sealer,
    suppressions: Suppressions,
    host_url: String,
    mailto: Option<String>,
    lifetime: i64,
}

static INSTALLED: OnceLock<Arc<OneClick>> = OnceLock::new();

/// Makes `one_click` the process's instance (the first call wins).
pub(crate) fn install(one_click: Arc<OneClick>) {
    let _ = INSTALLED.set(one_click);
}

/// The process's instance, once `herald serve` has installed it.
pub(crate) fn installed() -> Option<&'static Arc<OneClick>> {
    INSTALLED.get()
}

/// Whether `app` asked for one-click headers.
pub(crate) fn wanted_by(cfg: &Config, app: Option<&str>) -> bool {
    app.and_then(|a| cfg.apps.get(a))
        .is_some_and(|a| a.unsubscribe == UnsubscribeMode::OneClick)
}

/// The domain of an address (`""` for the null sender).
pub(crate) fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, d)| d)
}

impl OneClick {
    /// Opens the secret (made on first use, mode 0600) in `[web] dir`; unsubscribes go to
    /// `suppressions`.
    pub(crate) fn open(cfg: &Config, suppressions: Suppressions) -> anyhow::Result<OneClick> {
        let dir = cfg.web_dir();
        let secret = load_or_create_secret(&dir.join("unsubscribe.key"))?;
        let host = super::names::web_host(cfg);
        let port = cfg.web.listen.map_or(443, |l| l.port());
        let host_url = if port == 443 {
            format!("https://{host}")
        } else {
            format!("https://{host}:{port}")
        };
        let mailto = cfg
            .feedback
            .listen
            .and(cfg.feedback.dmarc_address())
            .map(|a| a.replacen("dmarc@", "unsubscribe@", 1));
        Ok(OneClick {
            sealer: Sealer::new(&secret),
            suppressions,
            host_url,
            mailto,
            lifetime: cfg.web.unsubscribe_lifetime.as_secs() as i64,
        })
    }

    /// The two header fields for a message from `app` (envelope sender `mail_from`) to
    /// `rcpt`, CRLF-terminated.
    pub(crate) fn header_fields(&self, app: &str, mail_from: &str, rcpt: &str) -> Vec<u8> {
        let sub = Subscription {
            app: app.to_string(),
            sender_domain: domain_of(mail_from).to_ascii_lowercase(),
            address: rcpt.to_ascii_lowercase(),
        };
        let token = self.sealer.seal(&sub, crate::store::now() + self.lifetime);
        let mut value = format!("<{}/u/{token}>", self.host_url);
        if let Some(m) = &self.mailto {
            value.push_str(&format!(",\r\n <mailto:{m}?subject=unsubscribe%20{token}>"));
        }
        format!(
            "List-Unsubscribe: {value}\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        )
        .into_bytes()
    }

    /// The `mailto:` unsubscribe address (`unsubscribe@<feedback domain>`), when the feedback
    /// listener runs.
    pub(crate) fn mailto_address(&self) -> Option<&str> {
        self.mailto.as_deref()
    }

    /// The subscription a genuine, unexpired token names.
    pub(crate) fn open_token(&self, token: &str) -> Option<Subscription> {
        self.sealer.open(token, crate::store::now())
    }

    /// Records the unsubscribe a token names in the suppression list (a replay only bumps
    /// its count); `Ok(None)` for a token that is not genuine.
    pub(crate) async fn record(
        &self,
        token: &str,
        via: &str,
    ) -> Result<Option<Subscription>, crate::suppress::SuppressError> {
        let Some(sub) = self.open_token(token) else {
            return Ok(None);
        };
        let entry = self
            .suppressions
            .suppress(
                &sub.sender_domain,
                Some(&sub.app),
                &sub.address,
                Reason::Unsubscribe,
            )
            .await?;
        if entry.count == 1 {
            tracing::info!(app = %sub.app, sender_domain = %entry.domain, via,
                "unsubscribe recorded in the suppression list");
        }
        Ok(Some(sub))
    }
}

/// The 32-byte secret behind the tokens: read, or made (mode 0600) on first use.
fn load_or_create_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() >= 32 => return Ok(bytes),
        Ok(_) => anyhow::bail!(
            "{} is shorter than 32 bytes; remove it to make a new one (links already sent \
             then stop working)",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
    }
    let secret: [u8; 32] = rand::random();
    let dir = path.parent().unwrap_or(Path::new("."));
    super::certs::write_private(dir, path, &secret)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(secret.to_vec())
}
