//! `[bimi."example.com"]`: the BIMI record (Brand Indicators for Message Identification) that
//! `herald dns` prints for a domain: where its SVG Tiny PS logo is (`l=`) and, optionally, its
//! Verified or Common Mark Certificate (`a=`). `herald check` then checks both.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One domain's BIMI assertion.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BimiDomainConfig {
    /// `https://` URL of the logo, an SVG Tiny PS file (`l=`).
    pub logo: String,
    /// `https://` URL of the VMC or CMC, a PEM chain (`a=`); Gmail shows logos only with one.
    #[serde(default)]
    pub certificate: Option<String>,
    /// The BIMI selector (`<selector>._bimi.<domain>`), `default` unless the mail names another.
    #[serde(default = "default_selector")]
    pub selector: String,
}

fn default_selector() -> String {
    "default".into()
}

/// Every domain's BIMI assertion, by domain.
pub type BimiConfig = BTreeMap<String, BimiDomainConfig>;

/// Checks each domain's URLs; `Err((key, problem))`.
pub fn validate_bimi(bimi: &BimiConfig) -> Result<(), (String, String)> {
    for (domain, b) in bimi {
        if !domain.contains('.') || domain.contains(['/', ' ', ':', '@']) {
            return Err((
                format!("bimi.{domain}"),
                "is not a domain name (e.g. [bimi.\"example.com\"])".into(),
            ));
        }
        let urls = [
            ("logo", Some(&b.logo)),
            ("certificate", b.certificate.as_ref()),
        ];
        for (key, url) in urls {
            if let Some(url) = url
                && (!url.starts_with("https://")
                    || url.len() <= "https://".len()
                    || url.contains([';', ' ', ',']))
            {
                return Err((
                    format!("bimi.{domain}.{key}"),
                    format!(
                        "{url:?} must be an https:// URL without ';', ',' or spaces (BIMI fetches over HTTPS only)"
                    ),
                ));
            }
        }
        if b.selector.is_empty()
            || !b
                .selector
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
        {
            return Err((
                format!("bimi.{domain}.selector"),
                "must be a DNS label such as \"default\"".into(),
            ));
        }
    }
    Ok(())
}

impl BimiDomainConfig {
    /// The record's value: `v=BIMI1; l=<logo>; a=<certificate>` (`a=` empty without one).
    pub fn record_value(&self) -> String {
        format!(
            "v=BIMI1; l={}; a={}",
            self.logo,
            self.certificate.as_deref().unwrap_or("")
        )
    }
}
