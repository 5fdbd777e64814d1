//! The decision for one recipient domain (RFC 8461 §5.1): the TXT id against the cache, a fetch
//! when the id changed or nothing fresh is cached, the cached policy kept when a fetch fails,
//! a background refresh of policies in use before they expire, and `[delivery] require_tls`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mail_auth::MessageAuthenticator;

use super::cache::{CachedPolicy, PolicyCache};
use super::discover::{self, Discovered, Discovery};
use super::fetch::{self, FetchError};
use crate::clock::unix_now;
use crate::config::Config;
use crate::tls_policy::{Mode, TlsDirective, TlsEvent, TlsSink};

/// How long a failed fetch of one (domain, id) is remembered before it is tried again, so that
/// a burst of messages to a broken domain does not fetch once per message.
const FAILURE_HOLD: Duration = Duration::from_secs(60);

/// Recent fetch failures by (domain, TXT id).
type Failures = Mutex<HashMap<(String, String), (Instant, FetchError)>>;

/// Where the policy in force comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// The cache: fresh, and the TXT id is unchanged.
    Cache,
    /// Fetched just now.
    Fetched,
    /// The cache, although the TXT record is gone or its look-up failed (the detail says which).
    CacheWithoutTxt(String),
    /// The cache, because fetching the policy for a changed TXT id failed.
    CacheAfterFailedFetch(FetchError),
    /// The domain announces no policy (the detail says why), and nothing fresh is cached.
    NoPolicy(String),
    /// A policy is announced but could not be fetched, and nothing fresh is cached.
    Failed(FetchError),
}

/// The outcome of resolving one domain's MTA-STS policy.
#[derive(Debug, Clone)]
pub struct Resolution {
    /// The policy domain, lowercase.
    pub domain: String,
    /// The policy in force, if any (mode `none` included).
    pub entry: Option<CachedPolicy>,
    /// Where it came from.
    pub source: Source,
}

impl Resolution {
    /// The MTA-STS directive, or `None` when no policy applies (absent or mode `none`).
    pub fn directive(&self) -> Option<TlsDirective> {
        match (&self.source, &self.entry) {
            (Source::Failed(e), _) => Some(TlsDirective::StsFailed {
                domain: self.domain.clone(),
                result_type: e.result_type,
                detail: e.detail.clone(),
            }),
            (_, Some(entry)) if entry.policy.mode != Mode::None => Some(TlsDirective::Sts {
                domain: self.domain.clone(),
                policy: Arc::new(entry.policy.clone()),
            }),
            _ => None,
        }
    }
}

/// Decides the TLS directive for recipient domains: MTA-STS first, then `require_tls`.
/// Create one in `herald serve` and share it (it holds the policy cache and HTTPS client).
pub struct StsResolver {
    require_tls: bool,
    require_tls_domains: Vec<String>,
    sts: Option<Arc<Engine>>,
    reporter: Option<Arc<dyn TlsSink>>,
}

struct Engine {
    auth: Arc<MessageAuthenticator>,
    client: reqwest::Client,
    port: u16,
    cache: PolicyCache,
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    failures: Failures,
    refreshing: Mutex<HashSet<String>>,
    /// The `_mta-sts` TXT answer of each domain, until its TTL runs out: one look-up per
    /// domain per TTL, not one per delivery.
    discovered: Mutex<Discovered>,
}

impl StsResolver {
    /// Builds the resolver from configuration (policy cache, HTTPS client, DNS).
    pub fn new(cfg: &Config) -> anyhow::Result<StsResolver> {
        let sts = if cfg.mta_sts.enabled {
            let auth = Arc::new(crate::resolver::authenticator(&cfg.dns)?);
            let client = fetch::https_client(cfg, auth.clone(), cfg.mta_sts.fetch_timeout)?;
            Some(Arc::new(Engine {
                auth,
                client,
                port: cfg.mta_sts.port,
                cache: PolicyCache::new(&cfg.mta_sts_cache_dir()),
                fetching: Mutex::new(HashMap::new()),
                failures: Mutex::new(HashMap::new()),
                refreshing: Mutex::new(HashSet::new()),
                discovered: Mutex::new(Discovered::default()),
            }))
        } else {
            None
        };
        Ok(StsResolver {
            require_tls: cfg.delivery.require_tls,
            require_tls_domains: cfg
                .delivery
                .require_tls_domains
                .iter()
                .map(|d| normalize(d))
                .collect(),
            sts,
            reporter: None,
        })
    }

    /// Emits a [`TlsEvent::PolicyUnavailable`] into `reporter` for each delivery attempt made
    /// without an announced policy that could not be fetched (`sts-policy-*` result types).
    pub fn with_reporter(mut self, reporter: Arc<dyn TlsSink>) -> StsResolver {
        self.reporter = Some(reporter);
        self
    }

    /// The directive for a recipient domain. An `enforce` policy wins; otherwise
    /// `[delivery] require_tls` / `require_tls_domains` make it `Required`; otherwise a
    /// `testing` policy or a failed fetch is returned for reporting; otherwise opportunistic.
    pub async fn directive_for(&self, domain: &str) -> TlsDirective {
        let resolution = self.resolve(domain).await;
        if let (Some(reporter), Source::Failed(e)) = (&self.reporter, &resolution.source) {
            reporter.emit(TlsEvent::PolicyUnavailable {
                domain: resolution.domain.clone(),
                result_type: e.result_type,
                detail: e.detail.clone(),
            });
        }
        let directive = self.directive_from(&resolution);
        tracing::debug!(domain = %resolution.domain, policy = directive.label(), "tls directive");
        directive
    }

    /// The directive a resolution leads to, with `[delivery] require_tls` applied.
    pub fn directive_from(&self, resolution: &Resolution) -> TlsDirective {
        let required = self.require_tls || self.require_tls_domains.contains(&resolution.domain);
        TlsDirective::with_require_tls(resolution.directive(), required)
    }

    /// Resolves the MTA-STS policy of `domain` (DNS, cache, fetch), saying where it came from.
    pub async fn resolve(&self, domain: &str) -> Resolution {
        let domain = normalize(domain);
        match &self.sts {
            None => Resolution {
                domain,
                entry: None,
                source: Source::NoPolicy("MTA-STS is off ([mta_sts] enabled = false)".into()),
            },
            Some(_) if !is_domain(&domain) => Resolution {
                domain,
                entry: None,
                source: Source::NoPolicy("not a domain name".into()),
            },
            Some(engine) => engine.clone().resolve(domain).await,
        }
    }

    /// The cached policy of `domain`, fresh or expired, without any network traffic.
    pub fn cached(&self, domain: &str) -> Option<CachedPolicy> {
        self.sts.as_ref()?.cache.get(&normalize(domain))
    }
}

impl Engine {
    async fn resolve(self: Arc<Self>, domain: String) -> Resolution {
        let now = unix_now();
        let cached = self.cache.get(&domain).filter(|c| c.is_fresh(now));
        let id = match self.discover(&domain).await {
            Discovery::Id(id) => id,
            Discovery::NoPolicy(why) | Discovery::Failed(why) => {
                let source = match cached {
                    Some(_) => Source::CacheWithoutTxt(why),
                    None => Source::NoPolicy(why),
                };
                return Resolution {
                    domain,
                    entry: cached,
                    source,
                };
            }
        };
        if let Some(entry) = cached.as_ref().filter(|c| c.policy.id == id) {
            if entry.wants_refresh(now) {
                self.clone().refresh_in_background(domain.clone(), id);
            }
            return Resolution {
                domain,
                entry: cached,
                source: Source::Cache,
            };
        }

        // One fetch per domain at a time; whoever waited may find the policy already fetched.
        let gate = lock(&self.fetching)
            .entry(domain.clone())
            .or_default()
            .clone();
        let resolution = {
            let _turn = gate.lock().await;
            self.fetch_in_turn(domain, id, cached).await
        };
        // Forget the gate once nobody else holds or waits on it (clones happen under the lock).
        let mut fetching = lock(&self.fetching);
        if Arc::strong_count(&gate) <= 2 {
            fetching.remove(&resolution.domain);
        }
        resolution
    }

    /// The `_mta-sts` TXT answer of `domain`: the one kept while its TTL runs, else a look-up
    /// (kept when it came with a TTL; a failed look-up is never kept).
    async fn discover(&self, domain: &str) -> Discovery {
        if let Some(kept) = lock(&self.discovered).get(domain, Instant::now()) {
            return kept;
        }
        let (discovery, until) = discover::discover_until(&self.auth, domain).await;
        lock(&self.discovered).keep(domain, &discovery, until, Instant::now());
        discovery
    }

    /// Fetches the policy for `id` unless another task just did, or just failed to.
    async fn fetch_in_turn(
        self: &Arc<Self>,
        domain: String,
        id: String,
        cached: Option<CachedPolicy>,
    ) -> Resolution {
        if let Some(entry) = self
            .cache
            .get(&domain)
            .filter(|c| c.is_fresh(unix_now()) && c.policy.id == id)
        {
            return Resolution {
                domain,
                entry: Some(entry),
                source: Source::Cache,
            };
        }
        let key = (domain.clone(), id.clone());
        let recent = lock(&self.failures)
            .get(&key)
            .filter(|(at, _)| at.elapsed() < FAILURE_HOLD)
            .map(|(_, e)| e.clone());
        let result = match recent {
            Some(e) => Err(e),
            None => fetch::fetch_policy(&self.client, &domain, self.port, &id).await,
        };
        match result {
            Ok(policy) => {
                lock(&self.failures).remove(&key);
                let entry = CachedPolicy::new(&domain, policy, unix_now());
                tracing::info!(
                    domain = %domain,
                    id = %entry.policy.id,
                    mode = super::policy::mode_name(entry.policy.mode),
                    max_age = entry.policy.max_age,
                    "mta-sts policy fetched"
                );
                self.store(&entry).await;
                Resolution {
                    domain,
                    entry: Some(entry),
                    source: Source::Fetched,
                }
            }
            Err(e) => {
                if recent_is_new(&self.failures, &key, &e) {
                    tracing::warn!(
                        domain = %domain,
                        result_type = ?e.result_type,
                        keeping_cached = cached.is_some(),
                        "mta-sts policy fetch failed: {}",
                        e.detail
                    );
                }
                let source = match cached {
                    Some(_) => Source::CacheAfterFailedFetch(e),
                    None => Source::Failed(e),
                };
                Resolution {
                    domain,
                    entry: cached,
                    source,
                }
            }
        }
    }

    /// Re-fetches a policy in use before it expires; a failure keeps the cached one.
    fn refresh_in_background(self: Arc<Self>, domain: String, id: String) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !lock(&self.refreshing).insert(domain.clone()) {
            return;
        }
        runtime.spawn(async move {
            match fetch::fetch_policy(&self.client, &domain, self.port, &id).await {
                Ok(policy) => {
                    let entry = CachedPolicy::new(&domain, policy, unix_now());
                    tracing::info!(domain = %domain, id = %id, "mta-sts policy refreshed");
                    self.store(&entry).await;
                }
                Err(e) => tracing::warn!(
                    domain = %domain,
                    "mta-sts refresh failed, the cached policy still applies: {}",
                    e.detail
                ),
            }
            lock(&self.refreshing).remove(&domain);
        });
    }

    async fn store(self: &Arc<Self>, entry: &CachedPolicy) {
        let engine = self.clone();
        let owned = entry.clone();
        let result = tokio::task::spawn_blocking(move || engine.cache.put(&owned)).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(
                domain = %entry.domain,
                "mta-sts: cannot write the policy cache: {e}"
            ),
            Err(e) => tracing::error!("mta-sts: cache writer failed: {e}"),
        }
    }
}

/// Records a fetch failure; true when it was not already known (log it once per hold).
fn recent_is_new(failures: &Failures, key: &(String, String), e: &FetchError) -> bool {
    let mut failures = lock(failures);
    let fresh = failures
        .get(key)
        .is_some_and(|(at, _)| at.elapsed() < FAILURE_HOLD);
    if !fresh {
        failures.retain(|_, (at, _)| at.elapsed() < FAILURE_HOLD);
        failures.insert(key.clone(), (Instant::now(), e.clone()));
    }
    !fresh
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn normalize(domain: &str) -> String {
    domain.trim().trim_end_matches('.').to_ascii_lowercase()
}

fn is_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.contains('.')
        && domain
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}
