//! `/messages` on the admin endpoint: the message history searched as JSON, and
//! `/messages/page`, a server-rendered page with a search form and, per message, its timeline
//! (accepted → attempts → delivered or bounced). No JavaScript, no external assets.
//!
//! Query parameters on both (all optional): `recipient`, `sender`, `app`, `message_id`,
//! `queue_id`, `status`, `since`, `until` (unix seconds, RFC 3339, or an age such as `2h`),
//! `limit`.

use crate::html::escape as esc;
use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::history::History;
use crate::history::db::StoredEvent;
use crate::history::search::Form;

/// The `/messages` routes over the history (`None`: `[history]` is off, they say so).
pub(crate) fn routes(history: Option<History>) -> Router {
    Router::new()
        .route("/messages", get(json))
        .route("/messages/page", get(page))
        .with_state(history)
}

async fn run(history: &Option<History>, form: &Form) -> Result<Vec<StoredEvent>, Response> {
    let Some(h) = history else {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "the message history is off ([history] enabled = false)\n",
        )
            .into_response());
    };
    let q = form
        .query(crate::clock::unix_now())
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response())?;
    h.search(q).await.map_err(|e| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot search the history: {e:#}\n"),
        )
            .into_response()
    })
}

async fn json(State(h): State<Option<History>>, Query(form): Query<Form>) -> Response {
    match run(&h, &form).await {
        Ok(events) => Json(events).into_response(),
        Err(r) => r,
    }
}

async fn page(State(h): State<Option<History>>, Query(form): Query<Form>) -> Response {
    let searched = [
        &form.recipient,
        &form.sender,
        &form.app,
        &form.message_id,
        &form.queue_id,
        &form.status,
        &form.since,
        &form.until,
    ]
    .iter()
    .any(|v| !v.trim().is_empty());
    let body = if searched {
        match run(&h, &form).await {
            Ok(events) => render_page(&form, Ok(&events)),
            Err(r) if r.status() == StatusCode::BAD_REQUEST => {
                let text = axum::body::to_bytes(r.into_body(), 4096)
                    .await
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                render_page(&form, Err(text.trim()))
            }
            Err(r) => return r,
        }
    } else {
        render_page(&form, Ok(&[]))
    };
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
            ),
        ],
        body,
    )
        .into_response()
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:75rem}\
h1{font-size:1.5rem}form{display:grid;grid-template-columns:repeat(4,1fr);gap:.5rem 1rem;\
margin-bottom:1.5rem}label{display:flex;flex-direction:column;font-size:.8rem;color:#555}\
input,select{font-size:.95rem;padding:.25rem}button{grid-column:4;padding:.4rem}\
section.message{border:1px solid #ddd;border-radius:.4rem;padding:.6rem 1rem;margin:1rem 0}\
section.message h2{font-size:1rem;margin:.2rem 0}.muted{color:#666;font-size:.85rem}\
ol.timeline{list-style:none;padding-left:0;margin:.5rem 0}\
ol.timeline li{padding:.25rem .5rem;border-left:4px solid #bbb;margin:.2rem 0;font-size:.9rem}\
li.accepted{border-color:#1a73e8}li.delivered{border-color:#188038}\
li.deferred{border-color:#f9ab00}li.bounced,li.expired,li.refused,li.suppressed,\
li.complained{border-color:#c5221f}.kind{font-weight:600;display:inline-block;min-width:6rem}\
.error{background:#fce8e6;border:1px solid #c5221f;padding:.6rem 1rem;border-radius:.4rem}";

fn time(t: u64) -> String {
    chrono::DateTime::from_timestamp(t as i64, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| t.to_string())
}

/// The whole page: the form (filled with `form`), then the messages found.
pub(crate) fn render_page(form: &Form, found: Result<&[StoredEvent], &str>) -> String {
    let field = |name: &str, label: &str, value: &str| {
        format!(
            "<label>{label}<input name=\"{name}\" value=\"{}\"></label>",
            esc(value)
        )
    };
    let mut status =
        String::from("<label>status<select name=\"status\"><option value=\"\">any</option>");
    for k in crate::events::ALL_KINDS {
        let sel = if form.status == k.as_str() {
            " selected"
        } else {
            ""
        };
        status.push_str(&format!(
            "<option value=\"{0}\"{sel}>{0}</option>",
            k.as_str()
        ));
    }
    status.push_str("</select></label>");
    let mut out = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>herald — message history</title><style>{STYLE}</style></head><body>\
         <h1>Message history</h1><form method=\"get\" action=\"/messages/page\" id=\"search\">\
         {}{}{}{}{}{}{}{}<button type=\"submit\">Search</button></form>",
        field("recipient", "recipient", &form.recipient),
        field("sender", "sender", &form.sender),
        field("app", "app", &form.app),
        field("message_id", "Message-ID", &form.message_id),
        field("queue_id", "queue id", &form.queue_id),
        status,
        field("since", "since (2h, RFC 3339)", &form.since),
        field("until", "until", &form.until),
    );
    let events = match found {
        Ok(e) => e,
        Err(why) => {
            out.push_str(&format!(
                "<p class=\"error\">{}</p></body></html>",
                esc(why)
            ));
            return out;
        }
    };
    // One timeline per message (queue id), oldest event first; messages newest first.
    let mut messages: BTreeMap<String, Vec<&StoredEvent>> = BTreeMap::new();
    for e in events {
        let key = e.event.queue_id.clone().unwrap_or_else(|| "-".into());
        messages.entry(key).or_default().push(e);
    }
    let mut ordered: Vec<(String, Vec<&StoredEvent>)> = messages.into_iter().collect();
    ordered
        .sort_by_key(|(_, evs)| std::cmp::Reverse(evs.iter().map(|e| (e.event.time, e.id)).max()));
    out.push_str(&format!(
        "<p class=\"muted\" id=\"count\">{} events in {} messages</p>",
        events.len(),
        ordered.len()
    ));
    for (queue_id, mut evs) in ordered {
        evs.sort_by_key(|e| (e.event.time, e.id));
        let first = &evs[0].event;
        out.push_str(&format!(
            "<section class=\"message\" data-queue-id=\"{}\"><h2>{}</h2><p class=\"muted\">\
             Message-ID {} · from {} · app {}</p><ol class=\"timeline\">",
            esc(&queue_id),
            esc(&queue_id),
            esc(first.message_id.as_deref().unwrap_or("-")),
            esc(if first.sender.is_empty() {
                "<>"
            } else {
                &first.sender
            }),
            esc(first.app.as_deref().unwrap_or("-")),
        ));
        for e in evs {
            let ev = &e.event;
            let mut detail = Vec::new();
            if let Some(a) = ev.attempt {
                detail.push(format!("attempt {a}"));
            }
            if let Some(r) = &ev.remote {
                detail.push(esc(r));
            }
            if let Some(r) = &ev.reply {
                detail.push(esc(r));
            }
            if let Some(c) = ev.class {
                detail.push(format!("class {}", c.as_str()));
            }
            out.push_str(&format!(
                "<li class=\"{kind}\"><span class=\"kind\">{kind}</span> {} · <span \
                 class=\"rcpt\">{}</span> <span class=\"muted\">{}</span></li>",
                time(ev.time),
                esc(&ev.recipient),
                detail.join(" · "),
                kind = ev.kind.as_str(),
            ));
        }
        out.push_str("</ol></section>");
    }
    out.push_str("</body></html>");
    out
}
