//! Who really sent a report. Anyone can mail `dmarc@<feedback.domain>` a report claiming to be
//! from any organization; such a report must not move a verdict. A DMARC report counts only
//! when its mail is authenticated for the reporting organization's domain (the domain of its
//! `<email>`, or its `<org_name>` when that is a domain): a passing DKIM signature whose `d=`
//! has the same organizational domain (as the large reporters sign theirs), or an SPF pass for
//! an envelope sender at that organization. Others are stored, shown as unverified and never
//! counted toward "safe".

use std::net::IpAddr;
use std::time::Duration;

use mail_auth::report::Report;
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator, SpfResult};

use super::classify::org_domain;
use crate::config::Config;
use crate::store::ParsedItem;

/// How long the DKIM and SPF checks of one mail may take (a dead resolver makes the report
/// unverified, never late).
const VERIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks report mail against herald's resolver (`[dns] servers`).
pub(crate) struct Verifier {
    auth: Option<MessageAuthenticator>,
    helo: String,
}

impl Verifier {
    /// A verifier on the configured resolver; without one (unreadable system configuration),
    /// every report is unverified (logged once here).
    pub(crate) fn new(cfg: &Config) -> Verifier {
        let auth = match crate::resolver::authenticator(&cfg.dns) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::warn!(error = %e, "feedback: no resolver; every report will be unverified");
                None
            }
        };
        Verifier {
            auth,
            helo: cfg.server.hostname.clone(),
        }
    }

    /// The organizational domains the mail is authenticated for: the `d=` of every passing
    /// DKIM signature, and the envelope sender's domain when SPF passes for `client`.
    pub(crate) async fn authenticated_orgs(
        &self,
        raw: &[u8],
        client: IpAddr,
        mail_from: &str,
    ) -> Vec<String> {
        let Some(auth) = &self.auth else {
            return Vec::new();
        };
        let mut orgs = Vec::new();
        if let Some(message) = AuthenticatedMessage::parse(raw) {
            let dkim = tokio::time::timeout(VERIFY_TIMEOUT, auth.verify_dkim(&message)).await;
            for out in dkim.unwrap_or_default() {
                if out.result() == &DkimResult::Pass
                    && let Some(sig) = out.signature()
                {
                    orgs.push(org_domain(&sig.d));
                }
            }
        }
        if let Some((_, domain)) = mail_from.rsplit_once('@') {
            let spf = auth.verify_spf(mail_auth::spf::verify::SpfParameters::verify_mail_from(
                client, domain, &self.helo, mail_from,
            ));
            if let Ok(out) = tokio::time::timeout(VERIFY_TIMEOUT, spf).await
                && out.result() == SpfResult::Pass
            {
                orgs.push(org_domain(domain));
            }
        }
        orgs.sort();
        orgs.dedup();
        orgs
    }
}

/// The reporting organization's domain: the domain of `<email>`, else `<org_name>` when it
/// is a domain name (`google.com`); `None` when the report names none.
pub(crate) fn reporter_domain(r: &Report) -> Option<String> {
    let m = &r.report_metadata;
    if let Some((_, d)) = m.email.trim().rsplit_once('@')
        && d.contains('.')
    {
        return Some(org_domain(d.trim_end_matches('>')));
    }
    let org = m.org_name.trim();
    if org.contains('.') && !org.contains(char::is_whitespace) {
        return Some(org_domain(org));
    }
    None
}

/// The DMARC reports among `items` (as `(org_name, report_id)`) whose reporting organization
/// is one of `orgs`, the domains the mail is authenticated for.
pub(crate) fn verified_reports(items: &[ParsedItem], orgs: &[String]) -> Vec<(String, String)> {
    items
        .iter()
        .filter_map(|item| match item {
            ParsedItem::Dmarc(r) => Some(&r.head),
            _ => None,
        })
        .filter(|r| reporter_domain(r).is_some_and(|d| orgs.contains(&d)))
        .map(|r| {
            (
                r.report_metadata.org_name.clone(),
                r.report_metadata.report_id.clone(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DmarcReport;

    fn report(org: &str, email: &str) -> Report {
        let mut r = Report::new();
        r.report_metadata.org_name = org.into();
        r.report_metadata.email = email.into();
        r.report_metadata.report_id = "1".into();
        r
    }

    #[test]
    fn the_reporter_is_the_domain_of_its_email_or_org() {
        assert_eq!(
            reporter_domain(&report("google.com", "noreply-dmarc-support@google.com")).as_deref(),
            Some("google.com")
        );
        assert_eq!(
            reporter_domain(&report("Enterprise Outlook", "dmarcreport@microsoft.com")).as_deref(),
            Some("microsoft.com")
        );
        assert_eq!(
            reporter_domain(&report("mail.yahoo.co.uk", "")).as_deref(),
            Some("yahoo.co.uk")
        );
        assert_eq!(reporter_domain(&report("Made Up Org", "")), None);
    }

    #[test]
    fn only_reports_of_an_authenticated_organization_are_verified() {
        let items = vec![
            ParsedItem::Dmarc(Box::new(DmarcReport::in_memory(report(
                "google.com",
                "noreply@google.com",
            )))),
            ParsedItem::Dmarc(Box::new(DmarcReport::in_memory(report(
                "Forged",
                "x@bank.test",
            )))),
        ];
        assert_eq!(
            verified_reports(&items, &["google.com".into()]),
            vec![("google.com".to_string(), "1".to_string())]
        );
        assert!(verified_reports(&items, &[]).is_empty());
    }
}
