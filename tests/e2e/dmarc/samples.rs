//! Aggregate reports shaped as Google, Microsoft and Yahoo send them (RFC 7489 Appendix C
//! XML; Google: a single-part mail whose body is a zip; Microsoft: multipart with a gzip'd XML
//! attachment and a namespaced `<feedback>`; Yahoo: multipart with a gzip attachment), built
//! from rows the test defines so expected numbers are computed, never typed in.

use std::io::Write;

use base64::Engine;

/// One `<record>`.
#[derive(Debug, Clone)]
pub struct Row {
    pub ip: &'static str,
    pub count: u64,
    /// `policy_evaluated`: aligned DKIM pass, aligned SPF pass.
    pub dkim_aligned: bool,
    pub spf_aligned: bool,
    pub header_from: &'static str,
    /// DKIM signatures seen: (d=, s=, result).
    pub dkim: Vec<(&'static str, &'static str, &'static str)>,
    /// SPF (domain, result).
    pub spf: (&'static str, &'static str),
}

impl Row {
    pub fn passes(&self) -> bool {
        self.dkim_aligned || self.spf_aligned
    }
}

/// One report.
#[derive(Debug, Clone)]
pub struct Report {
    pub org: &'static str,
    pub email: &'static str,
    pub report_id: String,
    pub domain: &'static str,
    pub policy: &'static str,
    pub begin: i64,
    pub end: i64,
    pub rows: Vec<Row>,
    /// Microsoft writes the RFC 7489 namespace and a `<version>`.
    pub namespaced: bool,
}

impl Report {
    pub fn xml(&self) -> String {
        let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n");
        if self.namespaced {
            x.push_str("<feedback xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n  <version>1.0</version>\n");
        } else {
            x.push_str("<feedback>\n");
        }
        x.push_str(&format!(
            "  <report_metadata>\n    <org_name>{}</org_name>\n    <email>{}</email>\n    \
             <report_id>{}</report_id>\n    <date_range>\n      <begin>{}</begin>\n      \
             <end>{}</end>\n    </date_range>\n  </report_metadata>\n",
            self.org, self.email, self.report_id, self.begin, self.end
        ));
        x.push_str(&format!(
            "  <policy_published>\n    <domain>{}</domain>\n    <adkim>r</adkim>\n    \
             <aspf>r</aspf>\n    <p>{}</p>\n    <sp>{}</sp>\n    <pct>100</pct>\n  \
             </policy_published>\n",
            self.domain, self.policy, self.policy
        ));
        for r in &self.rows {
            let word = |b: bool| if b { "pass" } else { "fail" };
            x.push_str(&format!(
                "  <record>\n    <row>\n      <source_ip>{}</source_ip>\n      \
                 <count>{}</count>\n      <policy_evaluated>\n        \
                 <disposition>none</disposition>\n        <dkim>{}</dkim>\n        \
                 <spf>{}</spf>\n      </policy_evaluated>\n    </row>\n    <identifiers>\n      \
                 <header_from>{}</header_from>\n    </identifiers>\n    <auth_results>\n",
                r.ip,
                r.count,
                word(r.dkim_aligned),
                word(r.spf_aligned),
                r.header_from
            ));
            for (d, s, res) in &r.dkim {
                x.push_str(&format!(
                    "      <dkim>\n        <domain>{d}</domain>\n        <selector>{s}</selector>\n        <result>{res}</result>\n      </dkim>\n"
                ));
            }
            x.push_str(&format!(
                "      <spf>\n        <domain>{}</domain>\n        <result>{}</result>\n      </spf>\n    </auth_results>\n  </record>\n",
                r.spf.0, r.spf.1
            ));
        }
        x.push_str("</feedback>\n");
        x
    }

    /// The receiver's file name: `org!domain!begin!end`.
    pub fn file_stem(&self) -> String {
        format!(
            "{}!{}!{}!{}",
            self.org_host(),
            self.domain,
            self.begin,
            self.end
        )
    }

    fn org_host(&self) -> &str {
        self.email
            .rsplit_once('@')
            .map(|(_, d)| d)
            .unwrap_or(self.org)
    }
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// A zip with the given (name, content) entries, deflated.
pub fn zip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, content) in entries {
        w.start_file(name.as_str(), opts).unwrap();
        w.write_all(content).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn b64_lines(bytes: &[u8]) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(bytes);
    b.as_bytes()
        .chunks(76)
        .map(|c| String::from_utf8_lossy(c).to_string())
        .collect::<Vec<_>>()
        .join("\r\n")
}

fn headers(from: &str, to: &str, subject: &str, id: &str) -> String {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: Tue, 1 Dec 2026 10:00:00 +0000\r\n\
         Message-ID: <{id}@report.test>\r\nMIME-Version: 1.0\r\n"
    )
}

/// Google: the whole body is the zip.
pub fn google_mail(r: &Report, to: &str) -> Vec<u8> {
    let name = format!("{}.zip", r.file_stem());
    let z = zip(&[(format!("{}.xml", r.file_stem()), r.xml().into_bytes())]);
    format!(
        "{}Content-Type: application/zip; name=\"{name}\"\r\nContent-Disposition: attachment; \
         filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
        headers(
            "noreply-dmarc-support@google.com",
            to,
            &format!(
                "Report domain: {} Submitter: google.com Report-ID: {}",
                r.domain, r.report_id
            ),
            &r.report_id
        ),
        b64_lines(&z)
    )
    .into_bytes()
}

/// Microsoft and Yahoo: multipart, a text part and a gzip'd XML attachment.
pub fn multipart_gzip_mail(r: &Report, from: &str, to: &str) -> Vec<u8> {
    let name = format!("{}.xml.gz", r.file_stem());
    attachment_mail(
        r,
        from,
        to,
        "application/gzip",
        &name,
        &gzip(r.xml().as_bytes()),
    )
}

/// A multipart report mail with one attachment of any content.
pub fn attachment_mail(
    r: &Report,
    from: &str,
    to: &str,
    ctype: &str,
    name: &str,
    content: &[u8],
) -> Vec<u8> {
    format!(
        "{}Content-Type: multipart/mixed; boundary=\"=_b0undary\"\r\n\r\n--=_b0undary\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\r\nThis is a DMARC aggregate report \
         for {}.\r\n\r\n--=_b0undary\r\nContent-Type: {ctype}; name=\"{name}\"\r\n\
         Content-Disposition: attachment; filename=\"{name}\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--=_b0undary--\r\n",
        headers(
            from,
            to,
            &format!(
                "Report Domain: {} Submitter: {} Report-ID: <{}>",
                r.domain, r.org, r.report_id
            ),
            &r.report_id
        ),
        r.domain,
        b64_lines(content)
    )
    .into_bytes()
}

/// Midnight UTC `days_ago` days ago.
pub fn day_start(days_ago: i64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    (now / 86_400 - days_ago) * 86_400
}

/// The DKIM selector receivers' report mail is signed with in these tests.
pub const REPORTER_SELECTOR: &str = "dmarc2026";

/// One Ed25519 key (PKCS#8) for every reporting organization of the tests.
fn reporter_key() -> &'static [u8] {
    static KEY: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        mail_auth::common::crypto::Ed25519Key::generate_pkcs8().expect("generate a DKIM key")
    })
}

/// Publishes the reporters' DKIM key for `domains` in the test DNS, as Google, Microsoft and
/// Yahoo publish theirs.
pub fn publish_reporter_keys(dns: &crate::support::dns::DnsServer, domains: &[&str]) {
    use mail_auth::common::crypto::Ed25519Key;
    let key = Ed25519Key::from_pkcs8_der(reporter_key()).expect("key");
    let p = base64::engine::general_purpose::STANDARD.encode(key.public_key());
    for d in domains {
        dns.add_txt(
            &format!("{REPORTER_SELECTOR}._domainkey.{d}"),
            &format!("v=DKIM1; k=ed25519; p={p}"),
        );
    }
}

/// `mail` with a DKIM signature of `domain` (the reporting organization) prepended.
pub fn dkim_signed(mail: Vec<u8>, domain: &str) -> Vec<u8> {
    use mail_auth::common::crypto::Ed25519Key;
    use mail_auth::common::headers::HeaderWriter;
    use mail_auth::dkim::DkimSigner;
    let key = Ed25519Key::from_pkcs8_der(reporter_key()).expect("key");
    let signature = DkimSigner::from_key(key)
        .domain(domain)
        .selector(REPORTER_SELECTOR)
        .headers(["From", "To", "Subject", "Date", "Message-ID"])
        .sign(&mail)
        .expect("sign");
    let mut out = signature.to_header().into_bytes();
    out.extend_from_slice(&mail);
    out
}

impl Report {
    /// The reporting organization's domain (of its `<email>`).
    pub fn reporter_domain(&self) -> &str {
        self.org_host()
    }
}
