//! What the public listener answers: the hosted MTA-STS policy (by `Host:`), the unsubscribe
//! confirmation page (`GET`, changes nothing) and the one-click `POST`, and 404 for the rest.

use crate::html::escape;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use super::unsubscribe::OneClick;
use crate::config::Config;

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct Pages {
    /// The configuration in force.
    pub cfg: Arc<Config>,
    /// The resolver for live MX look-ups of hosted policies.
    pub resolver: Arc<mail_auth::MessageAuthenticator>,
    /// One-click unsubscribe, when any app uses it.
    pub one_click: Option<Arc<OneClick>>,
}

/// The router of the public listener.
pub(crate) fn router(pages: Pages) -> Router {
    let limit = pages.cfg.web.max_body;
    Router::new()
        .route("/.well-known/mta-sts.txt", get(mta_sts_policy))
        .route("/u/{token}", get(confirm_page).post(unsubscribe))
        .fallback(|| async { not_found() })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(pages)
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "not found\n",
    )
        .into_response()
}

/// The host asked for, lower-cased, without a port.
fn host_of(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    Some(host.trim_end_matches('.').to_ascii_lowercase())
}

async fn mta_sts_policy(State(p): State<Pages>, headers: HeaderMap) -> Response {
    let Some(domain) =
        host_of(&headers).and_then(|h| h.strip_prefix("mta-sts.").map(str::to_string))
    else {
        return not_found();
    };
    match super::hosted_sts::policy_for(&p.cfg, &p.resolver, &domain).await {
        Some(Ok(policy)) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "max-age=300"),
            ],
            policy.text,
        )
            .into_response(),
        Some(Err(e)) => {
            tracing::warn!(domain = %domain, "web: hosted MTA-STS policy unavailable: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "the policy's MX hosts cannot be looked up right now\n",
            )
                .into_response()
        }
        None => not_found(),
    }
}

const STYLE: &str = "body{font-family:sans-serif;max-width:32em;margin:4em auto;padding:0 1em}\
                     button{font-size:1.1em;padding:.5em 1.5em}";

async fn confirm_page(State(p): State<Pages>, Path(token): Path<String>) -> Response {
    let Some(sub) = p.one_click.as_ref().and_then(|o| o.open_token(&token)) else {
        return not_found();
    };
    let html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><meta name=\"robots\" \
         content=\"noindex\"><title>Unsubscribe</title><style>{STYLE}</style></head><body>\n\
         <h1>Unsubscribe</h1>\n<p>Stop receiving this mail from {}?</p>\n\
         <form method=\"post\"><input type=\"hidden\" name=\"List-Unsubscribe\" \
         value=\"One-Click\"><button type=\"submit\">Unsubscribe</button></form>\n\
         </body></html>\n",
        escape(&sub.sender_domain)
    );
    (
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store")],
        Html(html),
    )
        .into_response()
}

async fn unsubscribe(
    State(p): State<Pages>,
    Path(token): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let Some(one_click) = p.one_click.as_ref() else {
        return not_found();
    };
    let one_click_body =
        form_urlencoded::parse(&body).any(|(k, v)| k == "List-Unsubscribe" && v == "One-Click");
    if !one_click_body {
        return (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "expected the body List-Unsubscribe=One-Click (RFC 8058)\n",
        )
            .into_response();
    }
    match one_click.record(&token, "https").await {
        Ok(Some(sub)) => (
            StatusCode::OK,
            Html(format!(
                "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Unsubscribed\
                 </title><style>{STYLE}</style></head><body>\n<h1>Unsubscribed</h1>\n\
                 <p>You will receive no more of this mail from {}.</p>\n</body></html>\n",
                escape(&sub.sender_domain)
            )),
        )
            .into_response(),
        Ok(None) => not_found(),
        Err(e) => {
            tracing::error!("web: cannot record an unsubscribe: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the unsubscribe could not be recorded; try again later\n",
            )
                .into_response()
        }
    }
}
