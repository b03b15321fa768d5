//! Minimal web UIs of the daemons: `/json` with Spark's field names (so existing
//! tooling works) and a small HTML status page. Handlers ask the daemon's actor.
//! With TLS configured (`flint.ssl.enabled`) they serve HTTPS with the
//! daemon's certificate.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;
use std::net::SocketAddr;

use flint_rpc::slots::{PerSource, Slot, Slots, SourceShare};
use flint_rpc::{LocalRef, ServerTlsStream, TlsConf};
use tokio::net::TcpStream;

use crate::messages::{MasterMsg, MasterStateResponse, WorkerMsg, WorkerStateResponse};

const ASK: Duration = Duration::from_secs(10);

pub(crate) fn serve_master(
    listener: tokio::net::TcpListener,
    tls: Option<TlsConf>,
    master: LocalRef<MasterMsg>,
) {
    let app = Router::new()
        .route("/json", get(master_json))
        .route("/json/", get(master_json))
        .route("/", get(master_page))
        .with_state(master);
    serve("master", listener, tls, app);
}

/// Open web UI connections at once, so idle clients cannot use up the
/// daemon's file descriptors (its RPC needs them). A new connection past it
/// closes the oldest: sockets held open (idle, or trickling a byte at a time
/// to defeat the idle limit) cannot keep other clients out.
const MAX_UI_CONNECTIONS: usize = 128;

fn serve(what: &'static str, listener: tokio::net::TcpListener, tls: Option<TlsConf>, app: Router) {
    tokio::spawn(async move {
        let slots = Slots::new(MAX_UI_CONNECTIONS);
        let r = match tls {
            None => {
                let per_source = PerSource::new(UI_CONNECTIONS_PER_SOURCE);
                axum::serve(
                    Capped {
                        listener,
                        slots,
                        per_source,
                    },
                    app,
                )
                .await
            }
            Some(tls) => axum::serve(TlsListener::start(listener, tls, slots), app).await,
        };
        if let Err(e) = r {
            tracing::error!("{what} web UI stopped: {e}");
        }
    });
}

/// Connections whose TLS handshakes are done: a background task accepts
/// sockets and runs each handshake in its own task (bounded in number and in
/// time), so a slow or hostile client never holds up the others.
struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(Held<ServerTlsStream<TcpStream>>, SocketAddr)>,
    addr: SocketAddr,
}

impl TlsListener {
    fn start(listener: tokio::net::TcpListener, tls: TlsConf, open: Slots) -> Self {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        // TLS handshakes in progress: a new one gives up the oldest, so
        // sockets that never finish theirs cannot keep clients out.
        let handshakes = Slots::new(UI_TLS_HANDSHAKES);
        let per_source = PerSource::new(UI_CONNECTIONS_PER_SOURCE);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!("web UI accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some(source) = per_source.take(peer.ip()) else {
                    tracing::debug!("web UI: {peer}'s host holds its share; closing");
                    continue;
                };
                let Some(handshake) = handshakes.take(&source) else {
                    tracing::debug!(
                        "web UI: {peer}'s host has evicted enough this second; closing"
                    );
                    continue;
                };
                let (tls, done, open) = (tls.clone(), tx.clone(), open.clone());
                tokio::spawn(async move {
                    let given_up = handshake.token().clone();
                    let r = tokio::select! {
                        biased;
                        r = tokio::time::timeout(UI_TLS_HANDSHAKE_TIMEOUT, tls.accept(tcp)) => r,
                        _ = given_up.cancelled() => {
                            tracing::debug!("web UI TLS handshake from {peer} given up for a newer one");
                            return;
                        }
                    };
                    drop(handshake);
                    match r {
                        Ok(Ok(s)) => match open.take(&source) {
                            Some(slot) => {
                                let _ = done.send((Held::new(s, slot, source), peer)).await;
                            }
                            None => tracing::debug!(
                                "web UI: {peer}'s host has evicted enough this second; closing"
                            ),
                        },
                        Ok(Err(e)) => {
                            tracing::debug!("web UI TLS handshake from {peer} failed: {e}")
                        }
                        Err(_) => tracing::debug!("web UI TLS handshake from {peer} timed out"),
                    }
                });
                if tx.is_closed() {
                    break;
                }
            }
        });
        TlsListener { ready, addr }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = Held<ServerTlsStream<TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The acceptor task only ends with the runtime.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
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
    let apps = |list: &[crate::messages::AppSummary]| {
        list.iter()
            .map(|a| {
                format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} MiB</td><td>{}</td><td>{}</td><td>{:?}</td><td>{:.1} s</td></tr>",
                    esc(&a.id),
                    esc(&a.name),
                    a.cores,
                    a.memoryperexecutor,
                    esc(&a.user),
                    esc(&a.submitdate),
                    a.state,
                    a.duration as f64 / 1000.0
                )
            })
            .collect::<String>()
    };
    const APP_HEAD: &str = "<tr><th>Id</th><th>Name</th><th>Cores</th><th>Memory per executor</th><th>User</th><th>Submitted</th><th>State</th><th>Duration</th></tr>";
    Html(format!(
        "<!doctype html><html><head><title>Flint Master at {url}</title></head><body>\
         <h1>Flint Master at {url}</h1><p>Status: {status:?}. Alive workers: {alive}. Cores: {cores} ({used} used). Memory: {mem} MiB ({mem_used} MiB used).</p>\
         <h2>Workers</h2><table border=1><tr><th>Id</th><th>Address</th><th>State</th><th>Cores</th><th>Memory</th></tr>{rows}</table>\
         <h2>Running applications</h2><table border=1>{APP_HEAD}{active}</table>\
         <h2>Running drivers</h2><table border=1>{DRIVER_HEAD}{active_drivers}</table>\
         <h2>Completed applications</h2><table border=1>{APP_HEAD}{completed}</table>\
         <h2>Completed drivers</h2><table border=1>{DRIVER_HEAD}{completed_drivers}</table>\
         </body></html>",
        url = esc(&s.url),
        status = s.status,
        alive = s.aliveworkers,
        cores = s.cores,
        used = s.coresused,
        mem = s.memory,
        mem_used = s.memoryused,
        active = apps(&s.activeapps),
        completed = apps(&s.completedapps),
        active_drivers = drivers(&s.activedrivers),
        completed_drivers = drivers(&s.completeddrivers),
    ))
    .into_response()
}

const DRIVER_HEAD: &str = "<tr><th>Id</th><th>Submitted</th><th>Worker</th><th>State</th><th>Cores</th><th>Memory</th><th>Main class</th></tr>";

fn drivers(list: &[crate::messages::DriverSummary]) -> String {
    list.iter()
        .map(|d| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:?}</td><td>{}</td><td>{} MiB</td><td>{}</td></tr>",
                esc(&d.id),
                esc(&d.submitdate),
                esc(&d.worker),
                d.state,
                d.cores,
                d.memory,
                esc(&d.mainclass)
            )
        })
        .collect()
}

fn executors(list: &[crate::messages::ExecutorSummary]) -> String {
    list.iter()
        .map(|e| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} MiB</td><td>{:?}</td></tr>",
                e.id,
                esc(&e.appid),
                e.cores,
                e.memory,
                e.state
            )
        })
        .collect()
}

async fn worker_page(State(w): State<LocalRef<WorkerMsg>>) -> Response {
    let s = match worker_state(&w).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    const EXEC_HEAD: &str =
        "<tr><th>Id</th><th>Application</th><th>Cores</th><th>Memory</th><th>State</th></tr>";
    Html(format!(
        "<!doctype html><html><head><title>Flint Worker {id}</title></head><body>\
         <h1>Flint Worker {id}</h1><p>Master: {master}. Cores: {cores} ({cores_used} used). Memory: {mem} MiB ({mem_used} MiB used).</p>\
         <h2>Running executors</h2><table border=1>{EXEC_HEAD}{running}</table>\
         <h2>Running drivers</h2><table border=1>{DRIVER_HEAD}{drivers}</table>\
         <h2>Finished executors</h2><table border=1>{EXEC_HEAD}{finished}</table>\
         <h2>Finished drivers</h2><table border=1>{DRIVER_HEAD}{finished_drivers}</table>\
         </body></html>",
        id = esc(&s.id),
        master = esc(&s.masterurl),
        cores = s.cores,
        cores_used = s.coresused,
        mem = s.memory,
        mem_used = s.memoryused,
        running = executors(&s.executors),
        finished = executors(&s.finishedexecutors),
        drivers = drivers(&s.drivers),
        finished_drivers = drivers(&s.finisheddrivers),
    ))
    .into_response()
}

/// A plain listener whose connections past `MAX_UI_CONNECTIONS` close the
/// oldest.
struct Capped {
    listener: tokio::net::TcpListener,
    slots: Slots,
    per_source: PerSource,
}

impl axum::serve::Listener for Capped {
    type Io = Held<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.listener.accept().await {
                Ok((io, peer)) => {
                    let Some(source) = self.per_source.take(peer.ip()) else {
                        tracing::debug!("web UI: {peer}'s host holds its share; closing");
                        continue;
                    };
                    let Some(slot) = self.slots.take(&source) else {
                        tracing::debug!(
                            "web UI: {peer}'s host has evicted enough this second; closing"
                        );
                        continue;
                    };
                    return (Held::new(io, slot, source), peer);
                }
                Err(e) => {
                    tracing::warn!("web UI accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// A connection holding one of the web UI's slots until it closes.
/// A web UI connection that moves no byte either way for this long is closed
/// (no request in time, an idle keep-alive, a client that stopped reading),
/// so sockets left open cannot keep the UI's slots from other clients.
const UI_IDLE: Duration = Duration::from_secs(10);

/// TLS handshakes the web UI runs at once (a new one gives up the oldest),
/// and the time each may take.
const UI_TLS_HANDSHAKES: usize = 64;
const UI_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Slots one source address may hold (a quarter of them).
const UI_CONNECTIONS_PER_SOURCE: usize = MAX_UI_CONNECTIONS / 4;

struct Held<S> {
    io: S,
    _slot: Slot,
    _source: SourceShare,
    /// Ready once the slot is given to a newer connection.
    evicted: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    idle: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl<S> Held<S> {
    fn new(io: S, slot: Slot, source: SourceShare) -> Self {
        Held {
            io,
            evicted: Box::pin(slot.token().clone().cancelled_owned()),
            _slot: slot,
            _source: source,
            idle: Box::pin(tokio::time::sleep(UI_IDLE)),
        }
    }

    /// Closed to make room for a newer connection.
    fn evicted(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        self.evicted.as_mut().poll(cx).is_ready()
    }

    /// Bytes moved: the idle clock starts again.
    fn moved(&mut self) {
        self.idle
            .as_mut()
            .reset(tokio::time::Instant::now() + UI_IDLE);
    }

    /// Pending I/O: an error once the connection has been idle too long.
    fn idle_too_long(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        self.idle.as_mut().poll(cx).is_ready()
    }
}

fn evicted_error() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "web UI connection closed for a newer one",
    )
}

fn idle_error() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "web UI connection idle too long",
    )
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Held<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.evicted(cx) {
            return std::task::Poll::Ready(Err(evicted_error()));
        }
        let before = buf.filled().len();
        match std::pin::Pin::new(&mut self.io).poll_read(cx, buf) {
            std::task::Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.moved();
                }
                std::task::Poll::Ready(r)
            }
            std::task::Poll::Pending if self.idle_too_long(cx) => {
                std::task::Poll::Ready(Err(idle_error()))
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Held<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.evicted(cx) {
            return std::task::Poll::Ready(Err(evicted_error()));
        }
        match std::pin::Pin::new(&mut self.io).poll_write(cx, buf) {
            std::task::Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    self.moved();
                }
                std::task::Poll::Ready(r)
            }
            std::task::Poll::Pending if self.idle_too_long(cx) => {
                std::task::Poll::Ready(Err(idle_error()))
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

pub(crate) fn serve_worker(
    listener: tokio::net::TcpListener,
    tls: Option<TlsConf>,
    worker: LocalRef<WorkerMsg>,
) {
    let app = Router::new()
        .route("/json", get(worker_json))
        .route("/json/", get(worker_json))
        .route("/", get(worker_page))
        .with_state(worker);
    serve("worker", listener, tls, app);
}

async fn worker_state(w: &LocalRef<WorkerMsg>) -> Result<WorkerStateResponse, Response> {
    w.ask::<WorkerStateResponse>(WorkerMsg::RequestWorkerState, ASK)
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response())
}

async fn worker_json(State(w): State<LocalRef<WorkerMsg>>) -> Response {
    match worker_state(&w).await {
        Ok(s) => Json(s).into_response(),
        Err(r) => r,
    }
}
