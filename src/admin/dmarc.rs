//! `/dmarc` on the admin endpoint: the DMARC summary as JSON, and `/dmarc/page`, a
//! server-rendered page per domain — the verdict, the daily pass rate as an inline SVG chart
//! and the sources table. No JavaScript, no external assets: it works from a jump host.
//!
//! Query parameters on both: `days` (default 14) and `domain`.

use crate::html::escape as esc;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::config::Config;
use crate::feedback::summary::{self, Day, DomainSummary, Summary};
use crate::store::ReportStore;

#[derive(Clone)]
struct DmarcState {
    cfg: Arc<Config>,
    store: Arc<dyn ReportStore>,
}

/// `?days=N&domain=D`
#[derive(Debug, Deserialize)]
struct Params {
    #[serde(default = "default_days")]
    days: u32,
    domain: Option<String>,
}

fn default_days() -> u32 {
    14
}

/// The `/dmarc` routes over the report store.
pub(crate) fn routes(cfg: Arc<Config>, store: Arc<dyn ReportStore>) -> Router {
    Router::new()
        .route("/dmarc", get(json))
        .route("/dmarc/page", get(page))
        .with_state(DmarcState { cfg, store })
}

async fn build(st: &DmarcState, p: &Params) -> Result<Summary, Response> {
    summary::build(
        &st.cfg,
        st.store.as_ref(),
        p.domain.as_deref(),
        p.days.min(366),
    )
    .await
    .map_err(|e| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read the report store: {e:#}\n"),
        )
            .into_response()
    })
}

async fn json(State(st): State<DmarcState>, Query(p): Query<Params>) -> Response {
    match build(&st, &p).await {
        Ok(s) => Json(s).into_response(),
        Err(r) => r,
    }
}

async fn page(State(st): State<DmarcState>, Query(p): Query<Params>) -> Response {
    match build(&st, &p).await {
        Ok(s) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'unsafe-inline'",
                ),
            ],
            render_page(&s),
        )
            .into_response(),
        Err(r) => r,
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:70rem}\
h1{font-size:1.5rem}h2{margin-top:2.5rem;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;width:100%;font-size:.9rem}\
th,td{text-align:left;padding:.3rem .6rem;border-bottom:1px solid #eee}\
td.n{text-align:right;font-variant-numeric:tabular-nums}\
.verdict{padding:.8rem 1rem;border-radius:.4rem;margin:1rem 0}\
.safe{background:#e6f4ea;border:1px solid #34a853}.hold{background:#fef7e0;border:1px solid #f9ab00}\
.herald{color:#1a73e8}.authorized{color:#188038}.unknown{color:#c5221f}\
.muted{color:#666}";

/// The whole page.
pub(crate) fn render_page(s: &Summary) -> String {
    let mut out = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>herald — DMARC reports</title><style>{STYLE}</style></head><body>\
         <h1>DMARC aggregate reports — last {} days</h1>\
         <p class=\"muted\">{} report mails received, {} DMARC reports, {} duplicates, \
         {} unreadable (<code>herald dmarc rejected</code>).</p>",
        s.days,
        s.counters.mails,
        s.counters.dmarc_reports,
        s.counters.duplicates,
        s.counters.rejected
    );
    if s.domains.is_empty() {
        out.push_str(
            "<p id=\"empty\">No reports yet. Publish the records <code>herald dns</code> prints \
             and give receivers a day.</p>",
        );
    }
    for d in &s.domains {
        out.push_str(&render_domain(d));
    }
    out.push_str("</body></html>\n");
    out
}

fn render_domain(d: &DomainSummary) -> String {
    let id = esc(&d.domain);
    let mut out = format!(
        "<section class=\"domain\" id=\"domain-{id}\"><h2>{id}{}</h2>\
         <p>{} messages reported by {} organization{} ({}); <strong>{:.1}%</strong> pass DMARC; \
         policy now <code>p={}</code>.</p>",
        if d.signed_by_herald {
            ""
        } else {
            " <small class=\"muted\">(not a herald signing domain)</small>"
        },
        d.messages,
        d.reporters.len(),
        if d.reporters.len() == 1 { "" } else { "s" },
        esc(&d.reporters.join(", ")),
        d.pass_rate,
        esc(&d.policy)
    );
    if d.unverified.reports > 0 {
        out.push_str(&format!(
            "<p class=\"unverified\"><strong>Unverified:</strong> {} report{} claiming {} \
             messages, naming {}: not counted, their mail is not authenticated for the \
             organization it names.</p>",
            d.unverified.reports,
            if d.unverified.reports == 1 { "" } else { "s" },
            d.unverified.messages,
            esc(&d.unverified.reporters.join(", "))
        ));
    }
    out.push_str(&format!(
        "<div class=\"verdict {}\"><strong>Next step: {}</strong><br>{}</div>",
        if d.verdict.safe { "safe" } else { "hold" },
        esc(&d.verdict.next),
        esc(&d.verdict.text)
    ));
    out.push_str(&chart(&d.domain, &d.daily));
    out.push_str(
        "<table class=\"sources\"><thead><tr><th>source</th><th>PTR</th><th>class</th>\
         <th>messages</th><th>pass %</th><th>DKIM aligned</th><th>SPF aligned</th>\
         <th>quarantined/rejected</th><th>reported by</th></tr></thead><tbody>",
    );
    for s in &d.sources {
        out.push_str(&format!(
            "<tr><td><code>{}</code></td><td>{}</td><td class=\"{}\" title=\"{}\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{:.1}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}/{}</td><td>{}</td></tr>",
            s.ip,
            esc(s.ptr.as_deref().unwrap_or("—")),
            s.class.as_str(),
            esc(&s.why),
            s.class.as_str(),
            s.messages,
            s.pass_rate(),
            s.dkim_aligned,
            s.spf_aligned,
            s.quarantined,
            s.rejected,
            esc(&s.reporters.join(", "))
        ));
    }
    out.push_str("</tbody></table></section>");
    out
}

/// The daily pass rate as an inline SVG bar chart (0–100 %).
fn chart(domain: &str, days: &[Day]) -> String {
    let (w, h, left, bottom) = (640.0_f64, 180.0_f64, 40.0_f64, 24.0_f64);
    let plot_h = h - bottom - 10.0;
    let n = days.len().max(1) as f64;
    let slot = (w - left - 10.0) / n;
    let bar = (slot * 0.7).clamp(2.0, 48.0);
    let mut svg = format!(
        "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"daily DMARC pass rate for {}\">\
         <title>Daily DMARC pass rate for {}</title>",
        esc(domain),
        esc(domain)
    );
    for pct in [0, 50, 100] {
        let y = 10.0 + plot_h * (1.0 - f64::from(pct) / 100.0);
        svg.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{pct}%</text>",
            w - 10.0,
            left - 4.0,
            y + 3.0
        ));
    }
    for (i, d) in days.iter().enumerate() {
        let rate = if d.messages == 0 {
            0.0
        } else {
            d.pass as f64 / d.messages as f64
        };
        let bh = plot_h * rate;
        let x = left + slot * i as f64 + (slot - bar) / 2.0;
        let y = 10.0 + plot_h - bh;
        let color = if rate >= 0.98 { "#34a853" } else { "#f9ab00" };
        svg.push_str(&format!(
            "<rect class=\"day\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" height=\"{bh:.1}\" \
             fill=\"{color}\"><title>{}: {:.1}% of {} messages pass</title></rect>",
            esc(&d.date),
            rate * 100.0,
            d.messages
        ));
        if days.len() <= 16 || i % (days.len() / 8).max(1) == 0 {
            svg.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"9\" text-anchor=\"middle\">{}</text>",
                x + bar / 2.0,
                h - 8.0,
                esc(d.date.get(5..).unwrap_or(&d.date))
            ));
        }
    }
    svg.push_str("</svg>");
    svg
}
