//! Minimal web UIs of the daemons: `/json` with Spark's field names (so existing
//! tooling works) and a small HTML status page. Handlers ask the daemon's actor.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;
use flint_rpc::LocalRef;

use crate::messages::{MasterMsg, MasterStateResponse, WorkerMsg, WorkerStateResponse};

const ASK: Duration = Duration::from_secs(10);

pub(crate) fn serve_master(listener: tokio::net::TcpListener, master: LocalRef<MasterMsg>) {
    let app = Router::new()
        .route("/json", get(master_json))
        .route("/json/", get(master_json))
        .route("/", get(master_page))
        .with_state(master);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("master web UI stopped: {e}");
        }
    });
}

async fn master_state(m: &LocalRef<MasterMsg>) -> Result<MasterStateResponse, Response> {
    m.ask::<MasterStateResponse>(MasterMsg::RequestMasterState, ASK)
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response())
}

async fn master_json(State(m): State<LocalRef<MasterMsg>>) -> Response {
    match master_state(&m).await {
        Ok(s) => Json(s).into_response(),
        Err(r) => r,
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

async fn master_page(State(m): State<LocalRef<MasterMsg>>) -> Response {
    let s = match master_state(&m).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut rows = String::new();
    for w in &s.workers {
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}:{}</td><td>{:?}</td><td>{} ({} used)</td><td>{} MiB ({} used)</td></tr>",
            esc(&w.id),
            esc(&w.host),
            w.port,
            w.state,
            w.cores,
            w.coresused,
            w.memory,
            w.memoryused
        ));
    }
    let mut apps = String::new();
    for a in &s.activeapps {
        apps.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:?}</td></tr>",
            esc(&a.id),
            esc(&a.name),
            a.cores,
            a.state
        ));
    }
    Html(format!(
        "<!doctype html><html><head><title>Flint Master at {url}</title></head><body>\
         <h1>Flint Master at {url}</h1><p>Status: {status:?}. Alive workers: {alive}. Cores: {cores} ({used} used).</p>\
         <h2>Workers</h2><table border=1><tr><th>Id</th><th>Address</th><th>State</th><th>Cores</th><th>Memory</th></tr>{rows}</table>\
         <h2>Running applications</h2><table border=1><tr><th>Id</th><th>Name</th><th>Cores</th><th>State</th></tr>{apps}</table>\
         </body></html>",
        url = esc(&s.url),
        status = s.status,
        alive = s.aliveworkers,
        cores = s.cores,
        used = s.coresused,
    ))
    .into_response()
}

pub(crate) fn serve_worker(listener: tokio::net::TcpListener, worker: LocalRef<WorkerMsg>) {
    let app = Router::new()
        .route("/json", get(worker_json))
        .route("/json/", get(worker_json))
        .with_state(worker);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("worker web UI stopped: {e}");
        }
    });
}

async fn worker_json(State(w): State<LocalRef<WorkerMsg>>) -> Response {
    match w
        .ask::<WorkerStateResponse>(WorkerMsg::RequestWorkerState, ASK)
        .await
    {
        Ok(s) => Json(s).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}
