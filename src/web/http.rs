//! The ACME client's HTTP: herald's own HTTPS client (rustls with the web PKI roots plus
//! `[tls] extra_roots`, names resolved through `[dns] servers`), so the ACME directory is
//! trusted exactly like every other HTTPS server herald talks to, and tests can point it at
//! a test CA's server.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use instant_acme::{BodyWrapper, BytesResponse, Error, HttpClient};

use crate::config::Config;

/// Time allowed for one ACME request.
const ACME_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// instant-acme's [`HttpClient`] on herald's reqwest client.
pub(super) struct ReqwestAcme(reqwest::Client);

impl ReqwestAcme {
    /// A client with herald's trust roots and name servers.
    pub(super) fn new(cfg: &Config) -> anyhow::Result<ReqwestAcme> {
        let auth = Arc::new(crate::resolver::authenticator(&cfg.dns)?);
        Ok(ReqwestAcme(crate::mta_sts::fetch::https_client(
            cfg,
            auth,
            ACME_REQUEST_TIMEOUT,
        )?))
    }
}

impl HttpClient for ReqwestAcme {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, Error>> + Send>> {
        let client = self.0.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| Error::Other(Box::new(e)))?
                .to_bytes();
            let url = parts.uri.to_string();
            let mut request = client.request(parts.method, &url).body(body);
            for (name, value) in &parts.headers {
                request = request.header(name, value);
            }
            let response = request
                .send()
                .await
                .map_err(|e| Error::Other(Box::new(e)))?;
            let mut out = http::Response::builder().status(response.status());
            for (name, value) in response.headers() {
                out = out.header(name, value);
            }
            let bytes = response
                .bytes()
                .await
                .map_err(|e| Error::Other(Box::new(e)))?;
            let out = out
                .body(Full::new(bytes))
                .map_err(|e| Error::Other(Box::new(e)))?;
            Ok(BytesResponse::from(out))
        })
    }
}
