//! The metrics listener (`--metrics-listen`, loopback by default): a small HTTP/1 server, off
//! the data path, with
//! - `GET /metrics`: every metric in the Prometheus text format 0.0.4: the handles the data
//!   paths update ([`crate::metrics::Metrics`]) and what is read from the broker's state at
//!   scrape time ([`collect`]), consumer-group lag included ([`lag`]);
//! - `GET /healthz`: 200 while the process answers at all (liveness);
//! - `GET /readyz`: 200 when the node can do its job, else 503 with the reasons, one per line:
//!   the data dir is open, the gRPC listeners are bound and serving (not starting, not
//!   shutting down), and the controller is reachable (or this node is the controller).
//!
//! Invariants: the listener is bound at start with the others (a bad address fails the start,
//! before anything is served) and answers until the logs are closed, so `/readyz` turns 503 the
//! moment shutdown begins and stays answerable while the broker drains.

pub mod collect;
pub mod lag;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;
use tracing::warn;

use super::BrokerState;

/// Everything a scrape of this broker answers, with group lag from `commits`.
pub fn registry(state: &Arc<BrokerState>, commits: lag::CommittedOffsets) -> Registry {
    let mut registry = Registry::default();
    state.metrics.register(&mut registry);
    registry.register_collector(Box::new(collect::StateCollector::new(
        Arc::clone(state),
        commits,
    )));
    registry
}

#[derive(Clone)]
struct Scrape {
    state: Arc<BrokerState>,
    registry: Arc<Registry>,
    /// The node runs the controller (so it is always reachable).
    is_controller: bool,
}

/// Serves the metrics listener on `listener` until `stop` completes.
pub async fn serve<L>(
    listener: L,
    state: Arc<BrokerState>,
    is_controller: bool,
    stop: impl Future<Output = ()> + Send + 'static,
) where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
{
    let commits = lag::CommittedOffsets::default();
    tokio::spawn(lag::refresh(
        state.controller.clone(),
        commits.clone(),
        state.shutdown_signal(),
    ));
    let scrape = Scrape {
        registry: Arc::new(registry(&state, commits)),
        state,
        is_controller,
    };
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(scrape);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        warn!(error = %e, "the metrics listener failed");
    }
}

async fn metrics(State(scrape): State<Scrape>) -> impl IntoResponse {
    // Off the runtime threads: a scrape takes partition locks for their sizes.
    let encoded = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        prometheus_text::encode(&mut text, &scrape.registry).map(|()| text)
    })
    .await;
    match encoded {
        Ok(Ok(text)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
            text,
        ),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("encoding the metrics failed: {e}\n"),
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("the scrape task failed: {e}\n"),
        ),
    }
}

/// Why the node is not ready, if it is not (see the module docs).
fn not_ready(scrape: &Scrape) -> Vec<&'static str> {
    let state = &scrape.state;
    let mut reasons = Vec::new();
    if !state.topics.is_open() {
        reasons.push("the data dir is closed");
    }
    if !state.health.is_serving() {
        reasons.push("the gRPC listeners are not serving (starting, or shutting down)");
    }
    if !scrape.is_controller && !state.cluster.controller_reachable() {
        reasons.push("the controller is unreachable");
    }
    reasons
}

async fn readyz(State(scrape): State<Scrape>) -> impl IntoResponse {
    let reasons = not_ready(&scrape);
    if reasons.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", reasons.join("\nnot ready: ")),
        )
    }
}
