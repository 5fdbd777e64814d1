//! The guard on the admin endpoint: `GET /apps/stats` (JSON: each app's counts and rates over
//! 24 h and 7 d, and why it is paused) and `POST /apps/resume?app=NAME`.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::Guard;

#[derive(Clone)]
struct GuardState {
    guard: Guard,
    apps: Vec<String>,
}

#[derive(Deserialize)]
struct ResumeParams {
    app: String,
}

/// The routes, for the configured `apps`.
pub(crate) fn routes(guard: Guard, apps: Vec<String>) -> Router {
    Router::new()
        .route("/apps/stats", get(stats))
        .route("/apps/resume", post(resume))
        .with_state(GuardState { guard, apps })
}

async fn stats(State(st): State<GuardState>) -> Response {
    let now = crate::clock::unix_now();
    let all: Vec<serde_json::Value> = st
        .apps
        .iter()
        .map(|a| {
            let s = st.guard.stats(a, now);
            serde_json::json!({
                "app": s.app,
                "paused": s.paused,
                "day": s.day,
                "week": s.week,
                "rates_24h": {
                    "hard_bounce": s.day.hard_rate(),
                    "block": s.day.block_rate(),
                    "complaint": s.day.complaint_rate(),
                },
                "rates_7d": {
                    "hard_bounce": s.week.hard_rate(),
                    "block": s.week.block_rate(),
                    "complaint": s.week.complaint_rate(),
                },
            })
        })
        .collect();
    Json(all).into_response()
}

async fn resume(State(st): State<GuardState>, Query(p): Query<ResumeParams>) -> Response {
    let now = crate::clock::unix_now();
    match st.guard.resume(&p.app, now).await {
        Ok(was) => Json(serde_json::json!({ "app": p.app, "was_paused": was })).into_response(),
        Err(e) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}
