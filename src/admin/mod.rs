//! The local admin HTTP endpoint: health, metrics, the queue API and `/dns`.
//!
//! Every route but `/health` needs the admin token (see `guard`): routes merged into the
//! router before [`start`] are covered without code of their own.
//!
//! Routes (JSON unless noted):
//! - `GET /health` → `ok` (text, no token needed); `503` and the reason when the spool cannot
//!   take mail (read-only or full file system)
//! - `GET /login` → a form taking the token; `POST /login` sets the login cookie
//! - `GET /` → an index of the pages (HTML)
//! - `GET /metrics` → counters, one `name value` per line (text)
//! - `GET /queue` → every queued message (`?limit=N&after=ID`: a page); `GET /queue/{id}` → one
//! - `GET /queue/summary` → counts per destination, app and age, and traffic shaping
//! - `POST /queue/{id}/retry`, `POST /queue/retry` (all), `POST /queue/{id}/hold`,
//!   `POST /queue/{id}/release`, `DELETE /queue/{id}?bounce=true|false`

pub(crate) mod client;
pub(crate) mod dmarc;
pub(crate) mod guard;
mod listener;
pub(crate) mod messages;
mod session;
pub(crate) mod token;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::config::Config;
use crate::queue::control::Control;
use crate::queue::manager::QueueManager;

/// The admin routes over a running queue (other areas may merge their own routes in).
pub(crate) fn router(queue: QueueManager) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/", get(index))
        .route("/metrics", get(metrics))
        .route("/queue", get(list))
        .route("/queue/retry", post(retry_all))
        .route("/queue/summary", get(summary))
        .route("/queue/{id}", get(show))
        .route("/queue/{id}", delete(remove))
        .route("/queue/{id}/retry", post(retry))
        .route("/queue/{id}/hold", post(hold))
        .route("/queue/{id}/release", post(release))
        .with_state(queue)
}

/// `ok`, or `503` and why the spool cannot take mail (a read-only or full disk).
async fn health() -> (StatusCode, String) {
    match crate::spool::fault() {
        None => (StatusCode::OK, "ok\n".into()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

/// Binds `admin.listen` before anything else starts (a busy port fails start-up fast);
/// [`start`] serves on it.
pub(crate) async fn bind(listen: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("admin.listen: cannot listen on {listen}: {e}"))
}

/// Serves `router` on `listener` (from [`bind`]) in the background behind the token and Host
/// gate (`guard`), creating the token file on first start; errors stop start-up.
pub(crate) async fn start(
    cfg: &Config,
    listen: SocketAddr,
    listener: tokio::net::TcpListener,
    router: Router,
) -> anyhow::Result<()> {
    if !listen.ip().is_loopback() {
        tracing::warn!(%listen, "the admin endpoint is not on loopback: anyone who can reach it and has the token can delete mail");
    }
    let token_file = cfg.admin_token_file();
    let gate = Arc::new(guard::Gate {
        token: token::load_or_create(&token_file)?,
        hostname: cfg.server.hostname.to_ascii_lowercase(),
        sessions: session::Sessions::default(),
    });
    let router = router.layer(axum::middleware::from_fn_with_state(gate, guard::check));
    tracing::info!(%listen, token_file = %token_file.display(), "admin endpoint listening");
    tokio::spawn(async move {
        let app = router.into_make_service_with_connect_info::<listener::Peer>();
        if let Err(e) = axum::serve(listener::CappedListener::new(listener), app).await {
            tracing::error!(error = %e, "admin endpoint stopped");
        }
    });
    Ok(())
}

/// A page of links, where the login form sends a browser.
async fn index() -> axum::response::Html<&'static str> {
    axum::response::Html(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>herald admin</title></head>\
         <body>\n<h1>herald admin</h1>\n<ul>\n<li><a href=\"/queue\">queue</a> (JSON)</li>\n\
         <li><a href=\"/metrics\">metrics</a></li>\n<li><a href=\"/dns\">DNS records</a> (JSON)</li>\n\
         <li><a href=\"/messages/page\">message history</a></li>\n\
         <li><a href=\"/health\">health</a></li>\n</ul>\n</body></html>\n",
    )
}

/// `/metrics`: the Prometheus/OpenMetrics text of [`crate::metrics`], with the queue's depth
/// and oldest message measured now.
async fn metrics(State(q): State<QueueManager>) -> Response {
    let (depth, oldest) = q.depth();
    let now = crate::clock::unix_now();
    let oldest = oldest.map_or(0, |t| now.saturating_sub(t));
    crate::metrics::set_queue(depth as usize, std::time::Duration::from_secs(oldest));
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        crate::metrics::render(),
    )
        .into_response()
}

/// The queue (or a page of it): this node's, or with `[cluster]` the whole cluster's.
async fn list(
    State(q): State<QueueManager>,
    Query(page): Query<crate::queue::summary::Page>,
) -> Response {
    match q.page(&page).await {
        Ok(list) => Json(list).into_response(),
        Err(e) => action(e),
    }
}

/// What the queue holds per destination, app and age, and traffic shaping's state.
async fn summary(State(q): State<QueueManager>) -> Response {
    match q.summary().await {
        Ok(s) => Json(s).into_response(),
        Err(e) => action(e),
    }
}

async fn show(State(q): State<QueueManager>, Path(id): Path<String>) -> Response {
    match q.view(Some(&id)).await {
        Ok(mut found) if !found.is_empty() => Json(found.remove(0)).into_response(),
        Ok(_) => action(Control::NotFound { id }),
        Err(e) => action(e),
    }
}

/// The answer to an action: its HTTP status by kind, `{ok, message}` for `herald queue`.
fn action(r: Control) -> Response {
    let status = match &r {
        Control::Done(_) => StatusCode::OK,
        Control::NotFound { .. } => StatusCode::NOT_FOUND,
        Control::Refused(_) => StatusCode::CONFLICT,
        Control::Failed(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Json(r.to_wire())).into_response()
}

async fn retry(State(q): State<QueueManager>, Path(id): Path<String>) -> Response {
    action(q.retry(&id).await)
}

async fn retry_all(State(q): State<QueueManager>) -> Response {
    action(q.retry_all().await)
}

async fn hold(State(q): State<QueueManager>, Path(id): Path<String>) -> Response {
    action(q.set_held(&id, true).await)
}

async fn release(State(q): State<QueueManager>, Path(id): Path<String>) -> Response {
    action(q.set_held(&id, false).await)
}

/// `?bounce=true` on delete.
#[derive(Debug, Deserialize)]
struct DeleteParams {
    #[serde(default)]
    bounce: bool,
}

async fn remove(
    State(q): State<QueueManager>,
    Path(id): Path<String>,
    Query(p): Query<DeleteParams>,
) -> Response {
    action(q.delete(&id, p.bounce).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_control_result_has_its_status_and_keeps_its_words() {
        for (result, status, ok) in [
            (Control::Done("q1 released".into()), StatusCode::OK, true),
            (
                Control::NotFound { id: "q1".into() },
                StatusCode::NOT_FOUND,
                false,
            ),
            (
                Control::Refused("q1 is held; release it first".into()),
                StatusCode::CONFLICT,
                false,
            ),
            (
                Control::Failed("cannot remove q1: disk".into()),
                StatusCode::SERVICE_UNAVAILABLE,
                false,
            ),
        ] {
            let wire = result.to_wire();
            assert_eq!(wire.ok, ok);
            assert_eq!(action(result).status(), status, "{}", wire.message);
        }
        assert_eq!(
            Control::NotFound { id: "q1".into() }.message(),
            "no message q1 in the queue"
        );
    }
}
