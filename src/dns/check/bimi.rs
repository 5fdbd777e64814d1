//! BIMI readiness (`bimi.*`), once the domain's DMARC policy is enforced (quarantine or reject,
//! 100 %, not in testing): the `<selector>._bimi` record, the logo fetched over HTTPS and
//! checked against SVG Tiny PS, and the VMC/CMC named by `a=`: its PEM chain in order, each
//! certificate within its dates, the BIMI extended key usage, and the logo it carries (the
//! logotype extension, RFC 3709) matching the published logo, by SHA-256 hash or by the
//! embedded image. Signatures are not verified against a BIMI root.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use x509_cert::Certificate;
use x509_cert::der::Decode;

use super::lookup::Answer;
use super::{Ctx, Finding, Status};

/// Largest VMC/CMC PEM file read.
const MAX_PEM_SIZE: usize = 64 * 1024;
/// DER of id-kp-BrandIndicatorforMessageIdentification (1.3.6.1.5.5.7.3.31).
const BIMI_EKU: &[u8] = &[0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x1f];
/// id-pe-logotype (1.3.6.1.5.5.7.1.12).
const LOGOTYPE: &str = "1.3.6.1.5.5.7.1.12";
/// id-ce-extKeyUsage.
const EKU: &str = "2.5.29.37";

/// The DMARC policy in force, as far as BIMI cares.
#[derive(Debug, Clone)]
pub(super) struct Enforcement {
    /// True at p=quarantine or p=reject, 100 %, without t=y.
    pub(super) enforced: bool,
    /// The policy in words, for the message when it is not.
    pub(super) described: String,
}

/// The BIMI checks; quiet about BIMI (one info line) until DMARC is enforced.
pub(super) async fn check(ctx: &Ctx<'_>, dmarc: Option<&Enforcement>, out: &mut Vec<Finding>) {
    let configured = ctx.cfg.bimi.get(ctx.domain.as_str());
    let selector = configured.map(|b| b.selector.as_str()).unwrap_or("default");
    let name = format!("{selector}._bimi.{}", ctx.domain);
    match dmarc {
        Some(e) if e.enforced => {}
        other => {
            out.push(
                Finding::new(
                    "bimi.dmarc",
                    Status::Info,
                    format!(
                        "BIMI logos need DMARC at p=quarantine or p=reject (100 %, no t=y); {}",
                        other.map(|e| e.described.as_str()).unwrap_or("no DMARC policy applies")
                    ),
                )
                .fix("once DMARC is enforced, publish a BIMI record (`[bimi]` in herald's config, then `herald dns`)"),
            );
            return;
        }
    }
    let record = match ctx.dns.txt(&name).await {
        Err(e) => return out.push(Finding::new("bimi.record", Status::Error, e.to_string())),
        Ok(Answer::Found(txts)) => txts
            .into_iter()
            .find(|t| t.trim_start().to_ascii_lowercase().starts_with("v=bimi1")),
        Ok(_) => None,
    };
    let Some(record) = record else {
        let f = match configured {
            Some(b) => Finding::new(
                "bimi.record",
                Status::Warn,
                format!(
                    "[bimi] is configured for {} but {name} is not published",
                    ctx.domain
                ),
            )
            .fix(format!("publish {name}. TXT \"{}\"", b.record_value())),
            None => Finding::new(
                "bimi.record",
                Status::Info,
                format!(
                    "no BIMI record at {name} (optional: receivers show your logo beside your mail)"
                ),
            ),
        };
        return out.push(f);
    };
    let tag = |k: &str| {
        record.split(';').find_map(|t| {
            let (key, v) = t.split_once('=')?;
            key.trim()
                .eq_ignore_ascii_case(k)
                .then(|| v.trim().to_string())
        })
    };
    let (logo_url, cert_url) = (tag("l").unwrap_or_default(), tag("a").unwrap_or_default());
    if logo_url.is_empty() {
        return out.push(Finding::new(
            "bimi.record",
            Status::Info,
            format!("{name}: \"{record}\" declines BIMI (no l=)"),
        ));
    }
    let mut f = Finding::new("bimi.record", Status::Pass, format!("{name}: \"{record}\""));
    if let Some(b) = configured
        && (b.logo != logo_url || b.certificate.as_deref().unwrap_or("") != cert_url)
    {
        f = Finding::new(
            "bimi.record",
            Status::Warn,
            format!("{name}: \"{record}\" differs from herald's [bimi] configuration"),
        )
        .fix(format!("publish {name}. TXT \"{}\"", b.record_value()));
    }
    out.push(f);
    let client = match crate::resolver::authenticator(&ctx.cfg.dns).and_then(|auth| {
        crate::mta_sts::fetch::https_client(ctx.cfg, Arc::new(auth), Duration::from_secs(10))
    }) {
        Ok(c) => c,
        Err(e) => return out.push(Finding::new("bimi.logo", Status::Error, format!("{e:#}"))),
    };
    let logo = match fetch(&client, &logo_url, super::bimi_svg::MAX_LOGO_SIZE * 2).await {
        Err(e) => {
            out.push(
                Finding::new(
                    "bimi.logo",
                    Status::Fail,
                    format!("the logo could not be fetched: {e}"),
                )
                .fix(format!(
                    "serve the SVG at {logo_url} over HTTPS with a publicly trusted certificate"
                )),
            );
            return;
        }
        Ok(bytes) => bytes,
    };
    let problems = super::bimi_svg::problems(&logo);
    out.push(if problems.is_empty() {
        Finding::new(
            "bimi.logo",
            Status::Pass,
            format!("{logo_url}: SVG Tiny PS, square, {} bytes", logo.len()),
        )
    } else {
        Finding::new(
            "bimi.logo",
            Status::Fail,
            format!("{logo_url} is not SVG Tiny PS: {}", problems.join("; ")),
        )
        .fix("export the logo as SVG Tiny PS (baseProfile=\"tiny-ps\", a <title>, square, no scripts or external references, at most 32 KiB)")
    });
    if cert_url.is_empty() {
        out.push(Finding::new(
            "bimi.certificate",
            Status::Info,
            "no a= certificate: Yahoo may show the logo; Gmail and Apple need a VMC or CMC",
        ));
        return;
    }
    out.push(match fetch(&client, &cert_url, MAX_PEM_SIZE).await {
        Err(e) => Finding::new(
            "bimi.certificate",
            Status::Fail,
            format!("the certificate could not be fetched: {e}"),
        )
        .fix(format!(
            "serve the VMC/CMC PEM chain at {cert_url} over HTTPS"
        )),
        Ok(pem) => certificate(&cert_url, &pem, &logo),
    });
}

/// GETs `url` over HTTPS, at most `limit` bytes.
async fn fetch(client: &reqwest::Client, url: &str, limit: usize) -> Result<Vec<u8>, String> {
    let mut resp = client.get(url).send().await.map_err(|e| {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(inner) = src {
            s.push_str(&format!(": {inner}"));
            src = inner.source();
        }
        s
    })?;
    if !resp.status().is_success() {
        return Err(format!("{url} answered {}", resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        body.extend_from_slice(&chunk);
        if body.len() > limit {
            return Err(format!("{url} is larger than {limit} bytes"));
        }
    }
    Ok(body)
}

/// The VMC/CMC checks, first problem found.
fn certificate(url: &str, pem: &[u8], logo: &[u8]) -> Finding {
    let fail = |m: String| {
        Finding::new("bimi.certificate", Status::Fail, format!("{url}: {m}"))
            .fix("get the VMC or CMC for this exact logo from a BIMI mark verifying authority and serve its PEM chain, leaf first")
    };
    let ders = pem_blocks(pem);
    if ders.is_empty() {
        return fail("no PEM certificate in it".into());
    }
    let mut chain = Vec::new();
    for der in &ders {
        match Certificate::from_der(der) {
            Ok(c) => chain.push(c),
            Err(e) => return fail(format!("a certificate does not parse ({e})")),
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    for (i, c) in chain.iter().enumerate() {
        let v = &c.tbs_certificate.validity;
        let subject = c.tbs_certificate.subject.to_string();
        if v.not_before.to_unix_duration() > now {
            return fail(format!("{subject} is not valid yet"));
        }
        if v.not_after.to_unix_duration() < now {
            return fail(format!("{subject} expired"));
        }
        if let Some(next) = chain.get(i + 1)
            && c.tbs_certificate.issuer != next.tbs_certificate.subject
        {
            return fail(format!(
                "the chain is out of order: {subject} is issued by {}, not by the next certificate {}",
                c.tbs_certificate.issuer, next.tbs_certificate.subject
            ));
        }
    }
    let leaf = &chain[0].tbs_certificate;
    let ext = |oid: &str| {
        leaf.extensions
            .iter()
            .flatten()
            .find(|e| e.extn_id.to_string() == oid)
            .map(|e| e.extn_value.as_bytes())
    };
    if !ext(EKU).is_some_and(|v| contains(v, BIMI_EKU)) {
        return fail(
            "the leaf lacks the BIMI extended key usage (1.3.6.1.5.5.7.3.31): not a VMC or CMC"
                .into(),
        );
    }
    let Some(logotype) = ext(LOGOTYPE) else {
        return fail(
            "the leaf carries no logotype extension (RFC 3709): no logo to compare".into(),
        );
    };
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, logo);
    let matches =
        contains(logotype, hash.as_ref()) || embedded_svg(logotype).as_deref() == Some(logo);
    if !matches {
        return fail(
            "the logo in the certificate (logotype hash) does not match the published logo".into(),
        );
    }
    let until = chain[0].tbs_certificate.validity.not_after.to_string();
    Finding::new(
        "bimi.certificate",
        Status::Pass,
        format!(
            "{url}: {} certificate(s) in order and within their dates (leaf valid until {until}), BIMI key usage, and its logotype matches the logo (signatures not verified against a BIMI root)",
            chain.len()
        ),
    )
}

/// The DER of each `CERTIFICATE` block of a PEM file.
fn pem_blocks(pem: &[u8]) -> Vec<Vec<u8>> {
    let text = String::from_utf8_lossy(pem);
    let mut out = Vec::new();
    let mut rest = text.as_ref();
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let body = &rest[start + 27..];
        let Some(end) = body.find("-----END CERTIFICATE-----") else {
            break;
        };
        let b64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b64) {
            out.push(der);
        }
        rest = &body[end..];
    }
    out
}

/// The SVG a logotype extension embeds as a `data:image/svg+xml;base64,` URI (gzipped or not).
fn embedded_svg(ext: &[u8]) -> Option<Vec<u8>> {
    const PREFIX: &[u8] = b"data:image/svg+xml;base64,";
    let at = ext.windows(PREFIX.len()).position(|w| w == PREFIX)? + PREFIX.len();
    let b64: Vec<u8> = ext[at..]
        .iter()
        .copied()
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        .collect();
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut svg = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .take(MAX_PEM_SIZE as u64)
            .read_to_end(&mut svg)
            .ok()?;
        Some(svg)
    } else {
        Some(raw)
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}
