//! The CLI side of the admin endpoint: one place that builds the HTTP client, with the token
//! from `[admin] token_file` sent as `Authorization: Bearer` on every request.

use std::time::Duration;

use crate::config::Config;

/// A client for the admin endpoint at `[admin] listen`, sending the token when the token file
/// exists (a herald that never started has none yet; its endpoint does not answer either).
/// Fails when the file exists but cannot be read, saying what to do.
pub(crate) fn http_client(cfg: &Config, timeout: Duration) -> anyhow::Result<reqwest::Client> {
    // reqwest is built without a default TLS provider; it needs one even for plain HTTP.
    crate::trust::install_default_provider();
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = super::token::read(&cfg.admin_token_file())? {
        let value =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                anyhow::anyhow!(
                    "the admin token in {} holds characters that cannot be sent",
                    cfg.admin_token_file().display()
                )
            })?;
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .default_headers(headers)
        .build()?)
}

/// `http://<[admin] listen>`, when the endpoint is configured.
pub(crate) fn base_url(cfg: &Config) -> Option<String> {
    cfg.admin.listen.map(|l| format!("http://{l}"))
}
