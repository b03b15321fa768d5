//! Flint's RPC layer (Spark's RpcEnv): named endpoints on a `host:port`, one-way
//! `send` and request/reply `ask` with a timeout, actor-style delivery (an
//! endpoint handles one message at a time, so its state needs no locks), and a
//! `Disconnected` event when a peer's connection ends.
//!
//! Wire format: TCP, length-delimited frames (4-byte big-endian length, bounded by
//! `RpcConf::max_message_size`, 128 MiB by default as Spark's
//! `spark.rpc.message.maxSize`) of postcard-encoded [`Wire`] values. Every
//! connection starts with a handshake carrying the protocol version, the cluster
//! id, the sender's advertised address and an optional shared-secret token (the
//! hook for authentication; TLS would wrap the stream at the same place). Bad
//! bytes close that connection with a logged reason and never disturb the process.
//! One connection per peer address is reused in both directions.
//!
//! Invariants: only this crate knows the wire format; endpoint handlers are plain
//! synchronous methods run on the endpoint's own task, so they must not block.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// Version of the wire protocol; peers with another version are refused.
pub const PROTOCOL_VERSION: u32 = 1;

/// A process's RPC address as it advertises it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RpcAddress {
    pub host: String,
    pub port: u16,
}

impl RpcAddress {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        RpcAddress {
            host: host.into(),
            port,
        }
    }

    /// Parses `host:port`.
    pub fn parse(s: &str) -> Result<Self, RpcError> {
        let (h, p) = s
            .trim()
            .rsplit_once(':')
            .ok_or_else(|| RpcError::BadAddress(format!("'{s}' is not host:port")))?;
        let port = p.parse().map_err(|_| {
            RpcError::BadAddress(format!("'{s}': port '{p}' is not a number 0-65535"))
        })?;
        if h.is_empty() {
            return Err(RpcError::BadAddress(format!("'{s}' has no host")));
        }
        Ok(RpcAddress::new(h, port))
    }
}

impl fmt::Display for RpcAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

#[derive(Clone, Debug)]
pub struct RpcConf {
    pub max_message_size: usize,
    /// Peers must present the same cluster id (guards against cross-talk).
    pub cluster_id: String,
    /// Shared secret required from peers when set (authentication hook).
    pub secret: Option<String>,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
}

impl Default for RpcConf {
    fn default() -> Self {
        RpcConf {
            max_message_size: 128 << 20,
            cluster_id: "flint".into(),
            secret: None,
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("cannot bind {addr}: {reason}")]
    Bind { addr: String, reason: String },
    #[error("bad address: {0}")]
    BadAddress(String),
    #[error("message of {size} bytes exceeds flint.rpc.message.maxSize ({max} bytes)")]
    TooLarge { size: usize, max: usize },
    #[error("encoding failed: {0}")]
    Codec(String),
    #[error("no reply from {endpoint} at {to} within {after:?}")]
    Timeout {
        to: String,
        endpoint: String,
        after: Duration,
    },
    #[error("{endpoint} at {to} failed: {reason}")]
    Remote {
        to: String,
        endpoint: String,
        reason: String,
    },
    #[error("the RPC environment is shut down")]
    Shutdown,
}

/// Everything that crosses a connection.
#[derive(Serialize, Deserialize)]
enum Wire {
    Hello {
        version: u32,
        cluster_id: String,
        sender: Option<RpcAddress>,
        token: Option<String>,
    },
    HelloOk,
    Rejected {
        reason: String,
    },
    Send {
        to: String,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    Ask {
        id: u64,
        to: String,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    Reply {
        id: u64,
        result: Result<Vec<u8>, String>,
    },
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, RpcError> {
    postcard::to_stdvec(v).map_err(|e| RpcError::Codec(e.to_string()))
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    postcard::from_bytes(b).map_err(|e| e.to_string())
}

/// Answers one `ask`.
pub struct Replier {
    kind: ReplyKind,
}

enum ReplyKind {
    Remote {
        conn: mpsc::UnboundedSender<Wire>,
        id: u64,
    },
    Local(oneshot::Sender<Result<Vec<u8>, String>>),
}

impl Replier {
    pub fn reply<T: Serialize>(self, value: &T) {
        let result = encode(value).map_err(|e| e.to_string());
        self.finish(result);
    }

    pub fn fail(self, reason: impl Into<String>) {
        self.finish(Err(reason.into()));
    }

    fn finish(self, result: Result<Vec<u8>, String>) {
        match self.kind {
            ReplyKind::Remote { conn, id } => {
                let _ = conn.send(Wire::Reply { id, result });
            }
            ReplyKind::Local(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

/// An actor reachable by name. Handlers run one at a time on the endpoint's task.
pub trait Endpoint: Send + 'static {
    type Msg: DeserializeOwned + Send + 'static;
    fn on_start(&mut self, _ctx: &EndpointCtx<Self::Msg>) {}
    fn receive(
        &mut self,
        ctx: &EndpointCtx<Self::Msg>,
        from: RpcAddress,
        msg: Self::Msg,
        reply: Option<Replier>,
    );
    /// A peer's connection ended (every endpoint hears it).
    fn on_disconnected(&mut self, _ctx: &EndpointCtx<Self::Msg>, _peer: &RpcAddress) {}
    fn on_stop(&mut self) {}
}

enum Erased {
    Bytes {
        from: RpcAddress,
        payload: Vec<u8>,
        reply: Option<Replier>,
    },
    Disconnected(RpcAddress),
}

enum Local<M> {
    Msg { msg: M, reply: Option<Replier> },
    Stop,
}

/// What a handler can reach: the environment and its own endpoint.
pub struct EndpointCtx<M> {
    pub env: RpcEnv,
    pub name: String,
    this: LocalRef<M>,
}

impl<M: Send + 'static> EndpointCtx<M> {
    pub fn this(&self) -> &LocalRef<M> {
        &self.this
    }

    /// Delivers `msg` to this endpoint after `delay` (timers never touch state
    /// directly; they send a message, as in Spark).
    pub fn send_self_after(&self, delay: Duration, msg: M) {
        let this = self.this.clone();
        self.env.inner.rt.spawn(async move {
            tokio::time::sleep(delay).await;
            this.send(msg);
        });
    }
}

/// An in-process handle on an endpoint.
pub struct LocalRef<M> {
    tx: mpsc::UnboundedSender<Local<M>>,
}

impl<M> Clone for LocalRef<M> {
    fn clone(&self) -> Self {
        LocalRef {
            tx: self.tx.clone(),
        }
    }
}

impl<M: Send + 'static> LocalRef<M> {
    pub fn send(&self, msg: M) {
        let _ = self.tx.send(Local::Msg { msg, reply: None });
    }

    /// Asks the endpoint in-process; the reply is decoded as `R`.
    pub async fn ask<R: DeserializeOwned>(&self, msg: M, timeout: Duration) -> Result<R, RpcError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Local::Msg {
                msg,
                reply: Some(Replier {
                    kind: ReplyKind::Local(tx),
                }),
            })
            .map_err(|_| RpcError::Shutdown)?;
        let timeout_err = || RpcError::Timeout {
            to: "local".into(),
            endpoint: "local endpoint".into(),
            after: timeout,
        };
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => Err(timeout_err()),
            Ok(Err(_)) => Err(RpcError::Shutdown),
            Ok(Ok(Err(reason))) => Err(RpcError::Remote {
                to: "local".into(),
                endpoint: "local endpoint".into(),
                reason,
            }),
            Ok(Ok(Ok(bytes))) => decode(&bytes).map_err(RpcError::Codec),
        }
    }

    pub fn stop(&self) {
        let _ = self.tx.send(Local::Stop);
    }
}

/// Where the reply to an outstanding ask goes.
type ReplySlot = oneshot::Sender<Result<Vec<u8>, String>>;

struct Conn {
    id: u64,
    tx: mpsc::UnboundedSender<Wire>,
}

struct Inner {
    conf: RpcConf,
    address: Option<RpcAddress>,
    endpoints: std::sync::Mutex<HashMap<String, mpsc::UnboundedSender<Erased>>>,
    conns: std::sync::Mutex<HashMap<RpcAddress, Vec<Conn>>>,
    asks: std::sync::Mutex<HashMap<u64, ReplySlot>>,
    next_id: AtomicU64,
    shutdown: tokio_util::sync::CancellationToken,
    /// The runtime this environment's tasks run on, so `send` and
    /// `setup_endpoint` also work from threads outside it.
    rt: tokio::runtime::Handle,
}

/// The RPC environment of one process (Spark's RpcEnv); cheap to clone.
#[derive(Clone)]
pub struct RpcEnv {
    inner: Arc<Inner>,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A handler that panicked while holding a lock must not wedge the process:
    // the maps stay structurally valid, so recover the guard.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RpcEnv {
    fn new(conf: RpcConf, address: Option<RpcAddress>) -> Self {
        RpcEnv {
            inner: Arc::new(Inner {
                conf,
                address,
                endpoints: Default::default(),
                conns: Default::default(),
                asks: Default::default(),
                next_id: AtomicU64::new(1),
                shutdown: tokio_util::sync::CancellationToken::new(),
                rt: tokio::runtime::Handle::current(),
            }),
        }
    }

    /// A server environment listening on `bind:port` (0 = ephemeral) and
    /// advertising `advertise_host` with the bound port.
    pub async fn server(
        bind: &str,
        port: u16,
        advertise_host: &str,
        conf: RpcConf,
    ) -> Result<Self, RpcError> {
        let listener = TcpListener::bind((bind, port))
            .await
            .map_err(|e| RpcError::Bind {
                addr: format!("{bind}:{port}"),
                reason: e.to_string(),
            })?;
        let bound = listener.local_addr().map_err(|e| RpcError::Bind {
            addr: format!("{bind}:{port}"),
            reason: e.to_string(),
        })?;
        let env = RpcEnv::new(conf, Some(RpcAddress::new(advertise_host, bound.port())));
        let accept_env = env.clone();
        env.inner
            .rt
            .spawn(async move { accept_env.accept_loop(listener).await });
        Ok(env)
    }

    /// A client-only environment (no listening socket).
    ///
    /// # Panics
    /// Outside a tokio runtime (call it from within one; it remembers it).
    pub fn client(conf: RpcConf) -> Self {
        RpcEnv::new(conf, None)
    }

    pub fn address(&self) -> Option<&RpcAddress> {
        self.inner.address.as_ref()
    }

    pub fn conf(&self) -> &RpcConf {
        &self.inner.conf
    }

    /// Registers `endpoint` under `name` and starts its task.
    pub fn setup_endpoint<E: Endpoint>(&self, name: &str, mut endpoint: E) -> LocalRef<E::Msg> {
        let (etx, mut erx) = mpsc::unbounded_channel::<Erased>();
        let (ltx, mut lrx) = mpsc::unbounded_channel::<Local<E::Msg>>();
        lock(&self.inner.endpoints).insert(name.to_string(), etx);
        let this = LocalRef { tx: ltx };
        let ctx = EndpointCtx {
            env: self.clone(),
            name: name.to_string(),
            this: this.clone(),
        };
        let self_addr = self
            .address()
            .cloned()
            .unwrap_or_else(|| RpcAddress::new("local", 0));
        let shutdown = self.inner.shutdown.clone();
        self.inner.rt.spawn(async move {
            endpoint.on_start(&ctx);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    e = erx.recv() => match e {
                        Some(Erased::Bytes { from, payload, reply }) => match decode::<E::Msg>(&payload) {
                            Ok(msg) => endpoint.receive(&ctx, from, msg, reply),
                            Err(err) => {
                                tracing::warn!("{}: dropping undecodable message from {from}: {err}", ctx.name);
                                if let Some(r) = reply {
                                    r.fail(format!("undecodable message: {err}"));
                                }
                            }
                        },
                        Some(Erased::Disconnected(addr)) => endpoint.on_disconnected(&ctx, &addr),
                        None => break,
                    },
                    l = lrx.recv() => match l {
                        Some(Local::Msg { msg, reply }) => endpoint.receive(&ctx, self_addr.clone(), msg, reply),
                        Some(Local::Stop) | None => break,
                    },
                }
            }
            endpoint.on_stop();
            lock(&ctx.env.inner.endpoints).remove(&ctx.name);
        });
        this
    }

    /// Sends `msg` to `endpoint` at `to` without waiting. Delivery is best effort
    /// (as Spark's `send`): a message to an unreachable peer is dropped and logged.
    pub fn send<M: Serialize>(
        &self,
        to: &RpcAddress,
        endpoint: &str,
        msg: &M,
    ) -> Result<(), RpcError> {
        let payload = encode(msg)?;
        self.check_size(payload.len())?;
        let conn = self.connection(to);
        conn.send(Wire::Send {
            to: endpoint.to_string(),
            payload,
        })
        .map_err(|_| RpcError::Shutdown)
    }

    /// Sends `req` and waits up to `timeout` for the reply.
    pub async fn ask<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        to: &RpcAddress,
        endpoint: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RpcError> {
        let payload = encode(req)?;
        self.check_size(payload.len())?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.asks).insert(id, tx);
        let conn = self.connection(to);
        let sent = conn.send(Wire::Ask {
            id,
            to: endpoint.to_string(),
            payload,
        });
        if sent.is_err() {
            lock(&self.inner.asks).remove(&id);
            return Err(RpcError::Shutdown);
        }
        let res = tokio::time::timeout(timeout, rx).await;
        lock(&self.inner.asks).remove(&id);
        match res {
            Err(_) | Ok(Err(_)) => Err(RpcError::Timeout {
                to: to.to_string(),
                endpoint: endpoint.into(),
                after: timeout,
            }),
            Ok(Ok(Err(reason))) => Err(RpcError::Remote {
                to: to.to_string(),
                endpoint: endpoint.into(),
                reason,
            }),
            Ok(Ok(Ok(bytes))) => decode(&bytes).map_err(RpcError::Codec),
        }
    }

    /// Stops every endpoint and connection of this environment.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
        lock(&self.inner.conns).clear();
    }

    fn check_size(&self, size: usize) -> Result<(), RpcError> {
        let max = self.inner.conf.max_message_size.saturating_sub(64);
        if size > max {
            return Err(RpcError::TooLarge { size, max });
        }
        Ok(())
    }

    fn codec(&self) -> LengthDelimitedCodec {
        LengthDelimitedCodec::builder()
            .max_frame_length(self.inner.conf.max_message_size)
            .new_codec()
    }

    /// The writer channel of the connection to `to`, connecting in the
    /// background when there is none (messages queue meanwhile).
    fn connection(&self, to: &RpcAddress) -> mpsc::UnboundedSender<Wire> {
        let mut conns = lock(&self.inner.conns);
        if let Some(c) = conns.get(to).and_then(|v| v.last())
            && !c.tx.is_closed()
        {
            return c.tx.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        conns
            .entry(to.clone())
            .or_default()
            .push(Conn { id, tx: tx.clone() });
        drop(conns);
        let env = self.clone();
        let to = to.clone();
        self.inner.rt.spawn(async move {
            match env.connect(&to).await {
                Ok(framed) => env.run_conn(framed, to, id, rx).await,
                Err(reason) => {
                    tracing::warn!("cannot connect to {to}: {reason}");
                    env.drop_conn(&to, id);
                }
            }
        });
        tx
    }

    async fn connect(
        &self,
        to: &RpcAddress,
    ) -> Result<Framed<TcpStream, LengthDelimitedCodec>, String> {
        let conf = &self.inner.conf;
        let stream = tokio::time::timeout(
            conf.connect_timeout,
            TcpStream::connect((to.host.as_str(), to.port)),
        )
        .await
        .map_err(|_| format!("connect timed out after {:?}", conf.connect_timeout))?
        .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let mut framed = Framed::new(stream, self.codec());
        let hello = Wire::Hello {
            version: PROTOCOL_VERSION,
            cluster_id: conf.cluster_id.clone(),
            sender: self.inner.address.clone(),
            token: conf.secret.clone(),
        };
        framed
            .send(bytes::Bytes::from(
                encode(&hello).map_err(|e| e.to_string())?,
            ))
            .await
            .map_err(|e| e.to_string())?;
        let answer = tokio::time::timeout(conf.handshake_timeout, framed.next())
            .await
            .map_err(|_| "handshake timed out".to_string())?
            .ok_or("connection closed during handshake")?
            .map_err(|e| e.to_string())?;
        match decode::<Wire>(&answer)? {
            Wire::HelloOk => Ok(framed),
            Wire::Rejected { reason } => Err(format!("refused by peer: {reason}")),
            _ => Err("unexpected handshake answer".into()),
        }
    }

    async fn accept_loop(self, listener: TcpListener) {
        loop {
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => break,
                r = listener.accept() => match r {
                    Ok((stream, peer)) => {
                        let env = self.clone();
                        self.inner.rt.spawn(async move { env.accept(stream, peer).await });
                    }
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    }

    async fn accept(&self, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let conf = &self.inner.conf;
        let mut framed = Framed::new(stream, self.codec());
        let first = match tokio::time::timeout(conf.handshake_timeout, framed.next()).await {
            Ok(Some(Ok(b))) => b,
            Ok(Some(Err(e))) => {
                tracing::warn!("closing connection from {peer}: bad frame during handshake: {e}");
                return;
            }
            Ok(None) => return,
            Err(_) => {
                tracing::warn!(
                    "closing connection from {peer}: no handshake within {:?}",
                    conf.handshake_timeout
                );
                return;
            }
        };
        let (sender, refusal) = match decode::<Wire>(&first) {
            Ok(Wire::Hello {
                version,
                cluster_id,
                sender,
                token,
            }) => {
                let refusal = if version != PROTOCOL_VERSION {
                    Some(format!(
                        "protocol version {version} is not supported (this process speaks {PROTOCOL_VERSION})"
                    ))
                } else if cluster_id != conf.cluster_id {
                    Some(format!(
                        "cluster id '{cluster_id}' does not match '{}'",
                        conf.cluster_id
                    ))
                } else if conf.secret.is_some() && token != conf.secret {
                    Some("authentication failed".to_string())
                } else {
                    None
                };
                (sender, refusal)
            }
            Ok(_) => (None, Some("expected a handshake".to_string())),
            Err(e) => {
                tracing::warn!("closing connection from {peer}: undecodable handshake: {e}");
                return;
            }
        };
        if let Some(reason) = refusal {
            tracing::warn!("refusing connection from {peer}: {reason}");
            if let Ok(b) = encode(&Wire::Rejected { reason }) {
                let _ = framed.send(bytes::Bytes::from(b)).await;
            }
            return;
        }
        let Ok(ok) = encode(&Wire::HelloOk) else {
            return;
        };
        if framed.send(bytes::Bytes::from(ok)).await.is_err() {
            return;
        }
        let addr = sender.unwrap_or_else(|| RpcAddress::new(peer.ip().to_string(), peer.port()));
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.conns)
            .entry(addr.clone())
            .or_default()
            .push(Conn { id, tx });
        self.run_conn(framed, addr, id, rx).await;
    }

    /// Pumps one established connection until it ends, then reports the
    /// disconnect if no other connection to that peer remains.
    async fn run_conn(
        &self,
        framed: Framed<TcpStream, LengthDelimitedCodec>,
        peer: RpcAddress,
        id: u64,
        mut rx: mpsc::UnboundedReceiver<Wire>,
    ) {
        let (mut sink, mut stream) = framed.split();
        let writer_tx = {
            let conns = lock(&self.inner.conns);
            conns
                .get(&peer)
                .and_then(|v| v.iter().find(|c| c.id == id))
                .map(|c| c.tx.clone())
        };
        let Some(writer_tx) = writer_tx else { return };
        let shutdown = self.inner.shutdown.clone();
        let writer = self.inner.rt.spawn(async move {
            while let Some(w) = rx.recv().await {
                let Ok(bytes) = encode(&w) else { continue };
                if sink.send(bytes::Bytes::from(bytes)).await.is_err() {
                    break;
                }
            }
        });
        loop {
            let frame = tokio::select! {
                _ = shutdown.cancelled() => break,
                f = stream.next() => f,
            };
            match frame {
                None => break,
                Some(Err(e)) => {
                    tracing::warn!("closing connection to {peer}: {e}");
                    break;
                }
                Some(Ok(bytes)) => match decode::<Wire>(&bytes) {
                    Ok(w) => self.dispatch(w, &peer, &writer_tx),
                    Err(e) => {
                        tracing::warn!("closing connection to {peer}: undecodable frame: {e}");
                        break;
                    }
                },
            }
        }
        writer.abort();
        self.drop_conn(&peer, id);
    }

    fn drop_conn(&self, peer: &RpcAddress, id: u64) {
        let none_left = {
            let mut conns = lock(&self.inner.conns);
            match conns.get_mut(peer) {
                Some(v) => {
                    v.retain(|c| c.id != id);
                    let empty = v.is_empty();
                    if empty {
                        conns.remove(peer);
                    }
                    empty
                }
                None => true,
            }
        };
        if none_left && !self.inner.shutdown.is_cancelled() {
            for tx in lock(&self.inner.endpoints).values() {
                let _ = tx.send(Erased::Disconnected(peer.clone()));
            }
        }
    }

    fn dispatch(&self, w: Wire, peer: &RpcAddress, conn: &mpsc::UnboundedSender<Wire>) {
        match w {
            Wire::Send { to, payload } => match lock(&self.inner.endpoints).get(&to) {
                Some(ep) => {
                    let _ = ep.send(Erased::Bytes {
                        from: peer.clone(),
                        payload,
                        reply: None,
                    });
                }
                None => tracing::warn!("message from {peer} for unknown endpoint '{to}' dropped"),
            },
            Wire::Ask { id, to, payload } => {
                let reply = Replier {
                    kind: ReplyKind::Remote {
                        conn: conn.clone(),
                        id,
                    },
                };
                match lock(&self.inner.endpoints).get(&to) {
                    Some(ep) => {
                        let _ = ep.send(Erased::Bytes {
                            from: peer.clone(),
                            payload,
                            reply: Some(reply),
                        });
                    }
                    None => reply.fail(format!("no endpoint named '{to}'")),
                }
            }
            Wire::Reply { id, result } => {
                if let Some(tx) = lock(&self.inner.asks).remove(&id) {
                    let _ = tx.send(result);
                }
            }
            Wire::Hello { .. } | Wire::HelloOk | Wire::Rejected { .. } => {
                tracing::warn!("unexpected handshake message from {peer} ignored");
            }
        }
    }
}
