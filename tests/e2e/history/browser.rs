//! The `/messages/page` in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`) over the W3C WebDriver HTTP API, as the /dmarc page test does: log in with
//! the admin token, search by recipient with the form, and see the message's timeline
//! (accepted → delivered).

use super::rig::{Rig, submit, wait_search};
use crate::support::browser::Driver;
use crate::support::herald::Herald;

#[test]
fn messages_page_in_headless_chromium_searches_and_shows_the_timeline() {
    let rig = Rig::new(204);
    let mut cfg = rig.config();
    let admin = crate::support::free_addr();
    crate::support::set(&mut cfg, "admin.listen", admin.to_string());
    let h = Herald::start(rig.w.dir.path(), cfg);
    submit(&h, "bob@example.net", "page");
    submit(&h, "ann@example.net", "other");
    wait_search(&h, &["--status", "delivered"], 2);
    let token = std::fs::read_to_string(rig.w.dir.path().join("admin.token"))
        .expect("admin token file")
        .trim()
        .to_string();
    let profile = tempfile::tempdir().expect("profile dir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let driver = Driver::start().await;
        let s = driver.session(profile.path()).await;

        s.go(&format!("http://{admin}/messages/page")).await;
        assert!(s.source().await.contains("authentication required"));
        assert!(s.find_all("form#search").await.is_empty());

        // Logged in once the login POST has set its cookie: the page shows the form.
        let page = format!("http://{admin}/messages/page");
        s.log_in_and_open(admin, &token, &page, "form#search").await;
        s.type_into("form#search input[name=recipient]", "bob@example.net")
            .await;
        s.click("form#search button[type=submit]").await;
        s.wait_for("p#count").await;
        let messages = s.find_all("section.message").await;
        assert_eq!(
            messages.len(),
            1,
            "one message for bob: {}",
            s.source().await
        );
        let steps = s.find_all("section.message ol.timeline li").await;
        assert_eq!(steps.len(), 2, "accepted then delivered");
        assert_eq!(s.find_all("li.accepted").await.len(), 1);
        assert_eq!(s.find_all("li.delivered").await.len(), 1);
        let html = s.source().await;
        assert!(!html.contains("ann@example.net"), "only bob's message");
        let accepted = html.find("class=\"accepted\"").expect("accepted step");
        let delivered = html.find("class=\"delivered\"").expect("delivered step");
        assert!(accepted < delivered, "the timeline runs oldest first");
        s.close().await;
    });
}
