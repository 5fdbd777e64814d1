//! The suppression list on the admin endpoint: `GET /suppressions` (JSON, `?domain=`),
//! `POST /suppressions` (add: JSON `{domain, address, reason?, app?}`), `DELETE
//! /suppressions` (same body, without reason) and `GET /suppressions/page` (a table for a
//! person). Behind the admin endpoint's token like every other route.

use crate::html::escape;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::{Reason, SuppressError, Suppressions};

#[derive(Deserialize)]
struct ListParams {
    domain: Option<String>,
}

#[derive(Deserialize)]
struct Change {
    domain: String,
    address: String,
    #[serde(default)]
    app: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// The routes, on `list`.
pub fn routes(list: Suppressions) -> Router {
    Router::new()
        .route("/suppressions", get(list_json).post(add).delete(remove))
        .route("/suppressions/page", get(page))
        .with_state(list)
}

fn failed(e: SuppressError) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({ "error": e.to_string() })),
    )
        .into_response()
}

async fn list_json(State(list): State<Suppressions>, Query(p): Query<ListParams>) -> Response {
    match list.list(p.domain.as_deref()).await {
        Ok(entries) => Json(entries).into_response(),
        Err(e) => failed(e),
    }
}

async fn add(State(list): State<Suppressions>, Json(c): Json<Change>) -> Response {
    let reason = match c.reason.as_deref().map(Reason::parse) {
        None => Reason::Manual,
        Some(Some(r)) => r,
        Some(None) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({
                    "error": "reason must be hard_bounce, complaint, manual or unsubscribe"
                })),
            )
                .into_response();
        }
    };
    match list
        .suppress(&c.domain, c.app.as_deref(), &c.address, reason)
        .await
    {
        Ok(entry) => Json(entry).into_response(),
        Err(e @ SuppressError::NotAnAddress { .. }) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
        Err(e) => failed(e),
    }
}

async fn remove(State(list): State<Suppressions>, Json(c): Json<Change>) -> Response {
    match list.remove(&c.domain, c.app.as_deref(), &c.address).await {
        Ok(true) => Json(serde_json::json!({ "removed": true })).into_response(),
        Ok(false) => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": "no such suppression" })),
        )
            .into_response(),
        Err(e) => failed(e),
    }
}

fn date(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

async fn page(State(list): State<Suppressions>, Query(p): Query<ListParams>) -> Response {
    let entries = match list.list(p.domain.as_deref()).await {
        Ok(e) => e,
        Err(e) => return failed(e),
    };
    let mut rows = String::new();
    for e in &entries {
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            escape(&e.domain),
            escape(if e.app.is_empty() { "(all)" } else { &e.app }),
            escape(&e.address),
            e.reason.as_str(),
            date(e.first_at),
            date(e.last_at),
            e.count,
            e.expires_at.map(date).unwrap_or_else(|| "never".into()),
            escape(&e.detail),
        ));
    }
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>herald: suppression list</title>\
         <style>body{{font-family:sans-serif}}td,th{{padding:2px 8px;text-align:left}}</style></head>\
         <body><h1>Suppression list</h1><p>{} address(es). Remove one with \
         <code>herald suppress remove DOMAIN ADDRESS</code>.</p>\
         <table><tr><th>Domain</th><th>App</th><th>Address</th><th>Reason</th><th>First</th>\
         <th>Last</th><th>Count</th><th>Expires</th><th>Detail</th></tr>\n{rows}</table></body></html>",
        entries.len()
    ))
    .into_response()
}
