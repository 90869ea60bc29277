//! `GET /api/rooms/{room}/sfu`: the SFU's state of one room, per subscription
//! (publisher → subscriber, per kind) and per peer's negotiation, as JSON. The format is
//! in docs/sfu.md, "Subscription state". Open like `/api/stats`.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::SfuHandle;

/// The route.
pub fn routes(handle: SfuHandle) -> Router {
    Router::new()
        .route("/api/rooms/{room}/sfu", get(room_state))
        .with_state(handle)
}

async fn room_state(State(sfu): State<SfuHandle>, Path(room): Path<String>) -> Response {
    match sfu.room_state(room).await {
        Ok(v) => ([(header::CACHE_CONTROL, "no-store")], Json(v)).into_response(),
        Err(f) => (
            StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            format!("{}\n", f.message),
        )
            .into_response(),
    }
}
