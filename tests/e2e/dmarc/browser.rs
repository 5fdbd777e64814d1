//! The `/dmarc/page` in a real headless Chromium (Debian's `chromium` and `chromium-driver`),
//! driven over the W3C WebDriver HTTP API: refused without the admin token, then logged in
//! through the `/login` form with the token from `<data_dir>/admin.token`, the chart (SVG) and
//! the sources table present in the DOM, and a screenshot taken.

use std::net::SocketAddr;

use super::flow::{mail_for, publish_spf, story};
use super::smtp::deliver;
use super::{FEEDBACK, feedback_config, start};
use crate::support::browser::Driver;
use crate::support::dns::DnsServer;

#[test]
fn dmarc_page_in_headless_chromium_needs_the_token_and_shows_chart_and_sources() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    publish_spf(&dns);
    let (mut cfg, listen) = feedback_config(dir.path(), &dns);
    let admin: SocketAddr = crate::support::free_addr();
    crate::support::set(&mut cfg, "admin.listen", admin.to_string());
    let h = start(dir.path(), cfg);
    let rcpt = format!("dmarc@{FEEDBACK}");
    for (r, sender) in story() {
        assert_eq!(
            deliver(listen, &rcpt, &mail_for(&r, sender, &rcpt)).code,
            250
        );
    }
    // A forged report (unsigned, a made-up organization): shown as unverified, not counted.
    let mut forged = story().remove(0).0;
    forged.org = "Made Up Mail";
    forged.email = "reports@forger.test";
    forged.report_id = "forged-1".into();
    let mail = super::samples::multipart_gzip_mail(&forged, "reports@forger.test", &rcpt);
    assert_eq!(deliver(listen, &rcpt, &mail).code, 250);
    let token = std::fs::read_to_string(dir.path().join("admin.token"))
        .expect("admin token file in data_dir")
        .trim()
        .to_string();
    let page = format!("http://{admin}/dmarc/page");
    let profile = tempfile::tempdir().unwrap();
    let shot = dir.path().join("dmarc-page.png");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let driver = Driver::start().await;
        let s = driver.session(profile.path()).await;

        // Without the token: refused, nothing of the page shows.
        s.go(&page).await;
        let refused = s.source().await;
        assert!(
            refused.contains("authentication required"),
            "the page must be refused without the token: {refused}"
        );
        assert!(s.find_all("svg.chart").await.is_empty());

        // The login form with the token, as an administrator does.
        s.log_in_and_open(admin, &token, &page, "svg.chart").await;
        let charts = s.find_all("svg.chart").await;
        assert_eq!(
            charts.len(),
            2,
            "one chart per domain: {}",
            s.source().await
        );
        assert_eq!(s.find_all("#domain-example\\.com rect.day").await.len(), 8);
        let rows = s
            .find_all("#domain-example\\.com table.sources tbody tr")
            .await;
        assert_eq!(rows.len(), 4, "four sources for example.com");
        let html = s.source().await;
        assert!(html.contains("Next step: quarantine"), "{html}");
        assert!(
            html.contains("<strong>Unverified:</strong> 1 report") && html.contains("Made Up Mail"),
            "{html}"
        );
        assert!(html.contains("198.51.100.7"));
        let png = s.screenshot().await;
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG screenshot");
        assert!(
            png.len() > 10_000,
            "the screenshot shows a page ({} bytes)",
            png.len()
        );
        std::fs::write(&shot, &png).unwrap();
        eprintln!("screenshot: {}", shot.display());
        s.close().await;
    });
    drop(h);
}
