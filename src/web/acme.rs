//! ACME (RFC 8555) certificates for the public listener, validated with TLS-ALPN-01
//! (RFC 8737) on the listener itself, so nothing but the HTTPS port is needed.
//!
//! One task keeps the certificate fresh: it orders when there is none, when the names served
//! changed, or when renewal is due ([`certs::Issued::renew_at`]); the new certificate is
//! stored (key 0600) and put in force at once. A failed order keeps the old certificate,
//! is logged, and is retried after `[web] acme_retry`, doubling up to `acme_retry_max`.
//! A name whose A/AAAA records do not point at herald ([`super::names::reachable`]) is
//! left out of the order, with the reason logged: the CA could not validate it anyway.

use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};

use super::certs::{CertFiles, CertResolver, Issued, write_private};
use super::http::ReqwestAcme;
use super::shared::SharedCert;
use crate::config::Config;

/// What one pass of the certificate task decided.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The certificate in force covers every reachable name and is not due.
    Fresh {
        /// When it is due for renewal (unix seconds).
        renew_at: i64,
    },
    /// A new certificate was obtained and put in force.
    Issued {
        /// When it is due for renewal (unix seconds).
        renew_at: i64,
    },
    /// No name is reachable: nothing to order.
    NothingToOrder,
    /// Another node of the cluster is ordering; its certificate is adopted once stored.
    OtherNodeOrders,
}

/// The ACME account as stored in `[web] dir`/acme-account.json (mode 0600): which directory it
/// belongs to, and its credentials (the account key among them).
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// Orders and renews the listener's certificate.
pub(crate) struct Acme {
    cfg: Arc<Config>,
    resolver: Arc<CertResolver>,
    files: CertFiles,
    share: Option<SharedCert>,
}

impl Acme {
    /// The task's state; the stored certificate (if any) is put in force right away.
    /// With `share` (`[cluster]`), the certificate is the cluster's: see [`super::shared`].
    pub(crate) fn new(
        cfg: Arc<Config>,
        resolver: Arc<CertResolver>,
        share: Option<SharedCert>,
    ) -> Acme {
        let files = CertFiles::new(&cfg.web_dir());
        match files.load() {
            Ok(Some(issued)) => {
                tracing::info!(names = ?issued.names, not_after = issued.not_after,
                    "web: stored certificate in force");
                resolver.install(issued);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("web: the stored certificate is unusable, ordering anew: {e}"),
        }
        Acme {
            cfg,
            resolver,
            files,
            share,
        }
    }

    /// Runs forever: one pass, then a sleep until renewal is due (or a retry after a failure).
    pub(crate) async fn run(self, wanted: Vec<String>) {
        let mut backoff = self.cfg.web.acme_retry;
        loop {
            let wait = match self.pass(&wanted).await {
                Ok(outcome) => {
                    backoff = self.cfg.web.acme_retry;
                    match outcome {
                        Outcome::Fresh { renew_at } | Outcome::Issued { renew_at } => {
                            let now = crate::store::now();
                            // Names that were unreachable are looked at again within the hour.
                            Duration::from_secs((renew_at - now).clamp(1, 3600) as u64)
                        }
                        // With [cluster], a node serving names pointed elsewhere adopts the
                        // cluster's certificate: it looks again every minute.
                        Outcome::NothingToOrder => self.cfg.web.acme_retry_max.min(
                            Duration::from_secs(if self.share.is_some() { 60 } else { 600 }),
                        ),
                        Outcome::OtherNodeOrders => Duration::from_secs(5),
                    }
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), retry_in = %humantime::format_duration(backoff),
                        "web: ACME order failed; the certificate in force (if any) stays");
                    let wait = backoff;
                    backoff = (backoff * 2).min(self.cfg.web.acme_retry_max);
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Orders when needed; otherwise says when the next pass is due.
    pub(crate) async fn pass(&self, wanted: &[String]) -> anyhow::Result<Outcome> {
        self.adopt_shared().await;
        let names = super::names::reachable(&self.cfg, wanted).await;
        if names.is_empty() {
            return Ok(Outcome::NothingToOrder);
        }
        if let Some(renew_at) = self.fresh_for(&names) {
            return Ok(Outcome::Fresh { renew_at });
        }
        let Some(share) = &self.share else {
            return self.order_and_install(&names).await;
        };
        // [cluster] one node orders at a time; the others adopt what it stores.
        let Some(lock) = share.try_lock().await? else {
            tracing::info!(
                "web: another node is ordering the certificate; adopting it once stored"
            );
            return Ok(Outcome::OtherNodeOrders);
        };
        let result = async {
            self.adopt_shared().await;
            if let Some(renew_at) = self.fresh_for(&names) {
                return Ok(Outcome::Fresh { renew_at });
            }
            let outcome = self.order_and_install(&names).await?;
            if let Some(issued) = self.resolver.current() {
                share.store(&issued).await?;
            }
            Ok(outcome)
        }
        .await;
        lock.release().await;
        result
    }

    /// When the certificate in force is next due, if it covers `names` and is not due yet.
    fn fresh_for(&self, names: &[String]) -> Option<i64> {
        let current = self.resolver.current()?;
        if !current.covers(names) {
            return None;
        }
        let renew_at = current.renew_at(self.cfg.web.renew_before);
        if renew_at > crate::store::now() {
            return Some(renew_at);
        }
        tracing::info!(names = ?current.names, not_after = current.not_after, "web: certificate due for renewal");
        None
    }

    /// [cluster] Puts the cluster's certificate in force when it is newer than ours.
    async fn adopt_shared(&self) {
        let Some(share) = &self.share else { return };
        match share.load().await {
            Ok(Some(shared)) => {
                let newer = self
                    .resolver
                    .current()
                    .is_none_or(|c| shared.not_after > c.not_after);
                if newer {
                    if let Err(e) = self.files.store(&shared) {
                        tracing::warn!("web: cannot keep the cluster's certificate on disk: {e}");
                    }
                    tracing::info!(names = ?shared.names, not_after = shared.not_after,
                        "web: certificate from the cluster in force");
                    self.resolver.install(shared);
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("web: cannot read the cluster's certificate: {e}"),
        }
    }

    /// Orders for `names`, stores the result in `[web] dir` and puts it in force.
    async fn order_and_install(&self, names: &[String]) -> anyhow::Result<Outcome> {
        let issued = self.order(names).await?;
        let renew_at = issued.renew_at(self.cfg.web.renew_before);
        self.files.store(&issued).map_err(|e| {
            anyhow::anyhow!(
                "cannot store the new certificate in {}: {e}",
                self.cfg.web_dir().display()
            )
        })?;
        tracing::info!(names = ?issued.names, not_after = issued.not_after,
            "web: certificate issued and in force");
        self.resolver.install(issued);
        Ok(Outcome::Issued { renew_at })
    }

    /// One complete ACME order for `names`: account, authorizations by TLS-ALPN-01,
    /// finalization with a new key, the chain.
    async fn order(&self, names: &[String]) -> anyhow::Result<Issued> {
        let account = self.account().await?;
        let identifiers: Vec<Identifier> =
            names.iter().map(|n| Identifier::Dns(n.clone())).collect();
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(|e| anyhow::anyhow!("new order for {names:?}: {e}"))?;
        let mut challenged = Vec::new();
        let result = async {
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let mut authz = authz.map_err(|e| anyhow::anyhow!("authorization: {e}"))?;
                match authz.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    other => anyhow::bail!("authorization is {other:?}"),
                }
                let mut challenge = authz
                    .challenge(ChallengeType::TlsAlpn01)
                    .ok_or_else(|| anyhow::anyhow!("the CA offers no tls-alpn-01 challenge"))?;
                let name = challenge.identifier().to_string();
                let key = challenge_cert(&name, challenge.key_authorization().digest().as_ref())?;
                self.resolver.set_challenge(&name, key);
                challenged.push(name.clone());
                challenge
                    .set_ready()
                    .await
                    .map_err(|e| anyhow::anyhow!("challenge for {name}: {e}"))?;
            }
            let retries = RetryPolicy::new().timeout(Duration::from_secs(60));
            let status = order
                .poll_ready(&retries)
                .await
                .map_err(|e| anyhow::anyhow!("validation: {e}"))?;
            if status != OrderStatus::Ready {
                anyhow::bail!("the order is {status:?} after validation");
            }
            let key = rcgen::KeyPair::generate()?;
            let mut params = rcgen::CertificateParams::new(names.to_vec())?;
            params.distinguished_name = rcgen::DistinguishedName::new();
            let csr = params.serialize_request(&key)?;
            order
                .finalize_csr(csr.der())
                .await
                .map_err(|e| anyhow::anyhow!("finalize: {e}"))?;
            let chain = order
                .poll_certificate(&retries)
                .await
                .map_err(|e| anyhow::anyhow!("certificate: {e}"))?;
            Issued::from_pem(&chain, &key.serialize_pem())
                .map_err(|e| anyhow::anyhow!("the CA's certificate: {e}"))
        }
        .await;
        for name in &challenged {
            self.resolver.clear_challenge(name);
        }
        result
    }

    /// The stored account for the configured directory, or a new one (then stored).
    async fn account(&self) -> anyhow::Result<Account> {
        let directory = self.cfg.web.acme_directory.clone();
        let path = self.cfg.web_dir().join("acme-account.json");
        let http = || -> anyhow::Result<Box<dyn instant_acme::HttpClient>> {
            Ok(Box::new(ReqwestAcme::new(&self.cfg)?))
        };
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(stored) = serde_json::from_str::<StoredAccount>(&text)
            && stored.directory == directory
        {
            return Account::builder_with_http(http()?)
                .from_credentials(stored.credentials)
                .await
                .map_err(|e| anyhow::anyhow!("ACME account at {directory}: {e}"));
        }
        let contact: Vec<&str> = self
            .cfg
            .web
            .acme_contact
            .iter()
            .map(String::as_str)
            .collect();
        let (account, credentials) = Account::builder_with_http(http()?)
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                directory.clone(),
                None,
            )
            .await
            .map_err(|e| anyhow::anyhow!("creating an ACME account at {directory}: {e}"))?;
        let stored = serde_json::to_vec_pretty(&StoredAccount {
            directory,
            credentials,
        })?;
        write_private(&self.cfg.web_dir(), &path, &stored).map_err(|e| {
            anyhow::anyhow!("cannot store the ACME account in {}: {e}", path.display())
        })?;
        tracing::info!(account = %account.id(), "web: ACME account created");
        Ok(account)
    }
}

/// The self-signed certificate that answers a TLS-ALPN-01 validation of `name` (RFC 8737
/// §3): the name as its only subjectAltName, and the critical acmeIdentifier extension
/// holding the SHA-256 of the key authorization.
fn challenge_cert(name: &str, digest: &[u8]) -> anyhow::Result<Arc<CertifiedKey>> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let cert = params.self_signed(&key)?;
    let issued = Issued::from_pem(&cert.pem(), &key.serialize_pem())
        .map_err(|e| anyhow::anyhow!("challenge certificate: {e}"))?;
    Ok(issued.certified)
}
