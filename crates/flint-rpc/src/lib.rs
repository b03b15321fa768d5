//! Flint's RPC layer (Spark's RpcEnv): named endpoints on a `host:port`, one-way
//! `send` and request/reply `ask` with a timeout, actor-style delivery (an
//! endpoint handles one message at a time, so its state needs no locks), and a
//! `Disconnected` event when a peer's connection ends.
//!
//! Wire format: TCP, length-delimited frames (4-byte big-endian length) of
//! postcard-encoded [`Wire`] values. Every connection starts with a handshake:
//! the dialer's Hello (protocol version, cluster id, advertised address, a
//! random nonce), the acceptor's Challenge (its nonce and, when it has the
//! shared secret, an HMAC-SHA256 proof over both nonces), the dialer's Proof
//! (its own HMAC), then HelloOk or Rejected with a reason. Both sides prove
//! they know the secret without sending it; a dialer with a secret refuses a
//! peer that cannot prove it. Until the handshake completes frames are limited
//! to [`HANDSHAKE_FRAME_LIMIT`] bytes, at most `max_pending_handshakes`
//! connections may be in their handshake at once (a new one replaces the
//! oldest, at most [`slots::EVICTIONS_PER_SECOND`] a second per source
//! address; a quarter of them per source address), and each has
//! `handshake_timeout` to finish; after it, frames are bounded by
//! `RpcConf::max_message_size` (128 MiB by default, Spark's
//! `spark.rpc.message.maxSize`). Bad bytes close that connection with a logged
//! reason and never disturb the process.
//!
//! A peer is its connection: an ask's reply is accepted only from the
//! connection the ask went out on, a refused or lost connection fails the asks
//! waiting on it at once with the reason, and outgoing traffic to an address
//! goes over a connection this process dialed to it (a connection that merely
//! claims an address this process has dialed never carries its traffic; a
//! second claim of an address already connected is refused). Proofs cover the
//! address the dialer dialed and the one it claims, so a handshake cannot be
//! relayed to another member or reflected back to its dialer. Handlers learn how a message
//! arrived ([`Via`]): over a connection this process dialed to that address,
//! one it accepted from a peer claiming it, or from inside the process.
//!
//! Invariants: only this crate knows the wire format; endpoint handlers are plain
//! synchronous methods run on the endpoint's own task, so they must not block.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

pub mod slots;

/// Version of the wire protocol; peers with another version are refused.
pub const PROTOCOL_VERSION: u32 = 2;

/// Largest frame accepted before a connection's handshake completes.
pub const HANDSHAKE_FRAME_LIMIT: usize = 4096;

/// Memory a queued frame costs beyond its bytes (allocation and queue node).
const FRAME_OVERHEAD: usize = 96;

/// Messages from the network an endpoint may have waiting (with the frame
/// limit, this bounds an endpoint's inbox in bytes too).
const ENDPOINT_INBOX: usize = 1024;

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

/// Who sent a message and how it reached this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The peer's address: the one this process dialed, or the one the peer
    /// advertised in its handshake.
    pub addr: RpcAddress,
    pub via: Via,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// Posted inside this process (its own timers and children).
    Local,
    /// Over a connection this process dialed to `addr`: the peer is whoever
    /// listens there.
    Dialed,
    /// Over a connection this process accepted; `addr` is what the peer
    /// claimed (a cluster member's claim when authentication is on).
    Accepted,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.addr.fmt(f)
    }
}

#[derive(Clone)]
pub struct RpcConf {
    pub max_message_size: usize,
    /// Peers must present the same cluster id (guards against cross-talk).
    pub cluster_id: String,
    /// Shared secret both sides of every connection must prove they know.
    pub secret: Option<String>,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    /// Connections allowed in their handshake at once (a quarter of them per
    /// source address); when all are taken, a new one replaces the oldest.
    pub max_pending_handshakes: usize,
    /// Bytes a connection may have waiting to be written; a peer that lets
    /// more pile up (it stopped reading) is disconnected. The connection's
    /// writer runs on the environment's runtime, so what one handler sends
    /// before it returns is all queued at once: a handler's burst to one
    /// peer must stay well under this (the driver sends large stage binaries
    /// once per executor for this reason).
    pub max_queued_bytes: usize,
    /// How long one write may wait for a peer to read before it is dropped.
    pub write_timeout: Duration,
    /// A connection with no traffic at all for this long is closed (pings are
    /// sent every quarter of it, and answered, so a live peer never idles).
    pub idle_timeout: Duration,
    /// TLS on every connection (`flint.ssl.enabled`); plain TCP when None.
    pub tls: Option<TlsConf>,
}

/// TLS for RPC connections: this process's certificate chain and key (it
/// serves them when accepting) and the CA certificates it trusts (it checks
/// the certificate of every peer it dials against them, host name included).
/// The shared-secret handshake still runs inside: TLS keeps traffic private,
/// the secret proves membership.
#[derive(Clone)]
pub struct TlsConf {
    acceptor: tokio_rustls::TlsAcceptor,
    connector: tokio_rustls::TlsConnector,
}

impl TlsConf {
    /// From PEM files: the certificate chain, its private key, and the CA
    /// certificates to trust.
    pub fn from_pem_files(
        cert: &std::path::Path,
        key: &std::path::Path,
        trust: &std::path::Path,
    ) -> Result<Self, RpcError> {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| RpcError::Tls(format!("cannot read {}: {e}", p.display())))
        };
        TlsConf::from_pem(&read(cert)?, &read(key)?, &read(trust)?)
    }

    /// From PEM text (see `from_pem_files`).
    pub fn from_pem(cert: &[u8], key: &[u8], trust: &[u8]) -> Result<Self, RpcError> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        use tokio_rustls::rustls;
        let bad = |what: &str, e: &dyn fmt::Display| RpcError::Tls(format!("{what}: {e}"));
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<_, _>>()
            .map_err(|e| bad("certificate PEM", &e))?;
        if chain.is_empty() {
            return Err(RpcError::Tls(
                "the certificate file holds no certificate".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| bad("private key PEM", &e))?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(trust) {
            let ca = ca.map_err(|e| bad("trusted CA PEM", &e))?;
            roots
                .add(ca)
                .map_err(|e| bad("trusted CA certificate", &e))?;
        }
        if roots.is_empty() {
            return Err(RpcError::Tls(
                "the trust file holds no CA certificate".into(),
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("TLS versions", &e))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| bad("certificate and key", &e))?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("TLS versions", &e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsConf {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
        })
    }
}

impl TlsConf {
    /// Completes the server side of a TLS handshake on an accepted socket (the
    /// daemons' web UIs use it too).
    pub async fn accept(&self, tcp: TcpStream) -> std::io::Result<ServerTlsStream<TcpStream>> {
        self.acceptor.accept(tcp).await
    }
}

pub use tokio_rustls::server::TlsStream as ServerTlsStream;

/// What a connection runs on: TCP, or TLS over it.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}
type Stream = Box<dyn Io>;

impl fmt::Debug for RpcConf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcConf")
            .field("max_message_size", &self.max_message_size)
            .field("cluster_id", &self.cluster_id)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_pending_handshakes", &self.max_pending_handshakes)
            .field("max_queued_bytes", &self.max_queued_bytes)
            .field("write_timeout", &self.write_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Default for RpcConf {
    fn default() -> Self {
        RpcConf {
            max_message_size: 128 << 20,
            cluster_id: "flint".into(),
            secret: None,
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(5),
            max_pending_handshakes: 64,
            max_queued_bytes: 256 << 20,
            write_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(120),
            tls: None,
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
    #[error("no reply from {endpoint} at {to}: {reason}")]
    Connection {
        to: String,
        endpoint: String,
        reason: String,
    },
    #[error("the RPC environment is shut down")]
    Shutdown,
    #[error("TLS: {0}")]
    Tls(String),
    #[error(
        "{queued} bytes are already waiting for a peer that does not read (limit {limit}, flint.rpc.maxQueuedBytes); the connection is closed"
    )]
    Backlog { queued: usize, limit: usize },
}

/// Everything that crosses a connection.
#[derive(Serialize, Deserialize)]
enum Wire {
    Hello {
        version: u32,
        cluster_id: String,
        sender: Option<RpcAddress>,
        /// The address the dialer dialed: the acceptor refuses to answer for
        /// another, and both proofs cover it, so a handshake cannot be relayed
        /// to (or reflected off) a different process.
        target: RpcAddress,
        nonce: [u8; 32],
    },
    /// The acceptor's nonce and, if it has the secret, its proof.
    Challenge {
        nonce: [u8; 32],
        proof: Option<[u8; 32]>,
    },
    /// The dialer's proof, if it has the secret.
    Proof {
        proof: Option<[u8; 32]>,
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
        // Bytes, not a sequence of u8s (same encoding, far cheaper).
        result: Result<serde_bytes::ByteBuf, String>,
    },
    /// Liveness: answered with Pong; any frame counts as traffic.
    Ping,
    Pong,
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// What a handshake proof covers besides the nonces: the cluster, the address
/// the dialer dialed and the address it claims.
struct Binding<'a> {
    cluster: &'a str,
    target: &'a RpcAddress,
    sender: Option<&'a RpcAddress>,
}

/// HMAC-SHA256 under the secret of the role, the binding and both nonces:
/// proves knowledge of the secret for this connection only (fresh nonces on
/// both sides defeat replay; the role keeps one side's proof from serving as
/// the other's; the addresses keep a proof from being relayed to another
/// process).
fn mac(
    secret: &str,
    role: &[u8],
    b: &Binding,
    dialer: &[u8; 32],
    acceptor: &[u8; 32],
) -> HmacSha256 {
    use hmac::{KeyInit, Mac};
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    let mut field = |bytes: &[u8]| {
        m.update(&(bytes.len() as u64).to_le_bytes());
        m.update(bytes);
    };
    field(role);
    field(b.cluster.as_bytes());
    field(b.target.host.as_bytes());
    field(&b.target.port.to_le_bytes());
    match b.sender {
        Some(s) => {
            field(b"some");
            field(s.host.as_bytes());
            field(&s.port.to_le_bytes());
        }
        None => field(b"none"),
    }
    m.update(dialer);
    m.update(acceptor);
    m
}

fn proof(
    secret: &str,
    role: &[u8],
    b: &Binding,
    dialer: &[u8; 32],
    acceptor: &[u8; 32],
) -> [u8; 32] {
    use hmac::Mac;
    let mut out = [0u8; 32];
    out.copy_from_slice(
        &mac(secret, role, b, dialer, acceptor)
            .finalize()
            .into_bytes(),
    );
    out
}

/// Constant-time check of a peer's proof.
fn verify(
    secret: &str,
    role: &[u8],
    b: &Binding,
    dialer: &[u8; 32],
    acceptor: &[u8; 32],
    got: &[u8; 32],
) -> bool {
    use hmac::Mac;
    mac(secret, role, b, dialer, acceptor)
        .verify_slice(got)
        .is_ok()
}

const DIALER: &[u8] = b"flint-rpc dialer";
const ACCEPTOR: &[u8] = b"flint-rpc acceptor";

fn nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    if let Err(e) = getrandom::fill(&mut n) {
        // Without randomness the handshake cannot be made safe: stop.
        panic!("the system's random number source failed: {e}");
    }
    n
}

/// A warning about a refused connection, rate-limited (`refusal_logged`).
macro_rules! refusal {
    ($($arg:tt)*) => {
        if refusal_logged() {
            tracing::warn!($($arg)*);
        }
    };
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
    Remote { conn: ConnTx, id: u64 },
    Local(oneshot::Sender<Result<Vec<u8>, String>>),
}

impl Replier {
    pub fn reply<T: Serialize>(self, value: &T) {
        let result = encode(value).map_err(|e| e.to_string());
        self.finish(result);
    }

    /// As `reply`, from a blocking thread (`spawn_blocking`, never a
    /// runtime thread): when the connection's queue is full it waits for the
    /// writer to make room (up to `write_timeout`) instead of closing the
    /// connection. For large replies that many threads may send at once.
    pub fn reply_blocking<T: Serialize>(self, value: &T) {
        let result = encode(value).map_err(|e| e.to_string());
        self.finish_with(result, true);
    }

    pub fn fail(self, reason: impl Into<String>) {
        self.finish(Err(reason.into()));
    }

    fn finish(self, result: Result<Vec<u8>, String>) {
        self.finish_with(result, false)
    }

    fn finish_with(self, result: Result<Vec<u8>, String>, wait: bool) {
        match self.kind {
            ReplyKind::Remote { conn, id } => {
                let result = result.map(serde_bytes::ByteBuf::from);
                let reply = Wire::Reply { id, result };
                let sent = if wait {
                    conn.send_waiting(&reply)
                } else {
                    conn.send(&reply)
                };
                if let Err(RpcError::TooLarge { size, max }) = sent {
                    // The asker hears why instead of waiting for its timeout.
                    let _ = conn.send(&Wire::Reply {
                        id,
                        result: Err(format!(
                            "the reply is {size} bytes, over the frame limit (flint.rpc.message.maxSize, {max} bytes)"
                        )),
                    });
                }
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
        from: Peer,
        msg: Self::Msg,
        reply: Option<Replier>,
    );
    /// A peer's connection ended (every endpoint hears it).
    fn on_disconnected(&mut self, _ctx: &EndpointCtx<Self::Msg>, _peer: &RpcAddress) {}
    fn on_stop(&mut self) {}
}

enum Erased {
    Bytes {
        from: Peer,
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

/// How an outstanding ask ends.
enum AskOutcome {
    Reply(Result<Vec<u8>, String>),
    /// The connection it went out on was refused or lost.
    Failed(String),
}

/// Where the reply to an outstanding ask goes, and the connection it must
/// come back on.
struct ReplySlot {
    conn: u64,
    tx: oneshot::Sender<AskOutcome>,
}

struct Conn {
    id: u64,
    tx: ConnTx,
    /// This process dialed it (else accepted it from a peer claiming the address).
    dialed: bool,
}

/// The writing side of one connection: encoded frames queued for its writer
/// task, bounded in bytes, plus the token that closes the connection.
#[derive(Clone)]
struct ConnTx {
    tx: mpsc::UnboundedSender<bytes::Bytes>,
    queued: Arc<Queued>,
    limit: usize,
    /// How long `send_waiting` waits for room (`write_timeout`).
    wait: Duration,
    /// The largest frame the codec will write (`max_message_size`).
    max_frame: usize,
    close: tokio_util::sync::CancellationToken,
}

/// Bytes queued on one connection, and the threads waiting for room.
#[derive(Default)]
struct Queued {
    bytes: AtomicUsize,
    /// Frames written so far: a waiter's clock restarts when it moves.
    progress: AtomicU64,
    waiters: AtomicUsize,
    lock: std::sync::Mutex<()>,
    room: std::sync::Condvar,
}

impl Queued {
    fn load(&self) -> usize {
        self.bytes.load(Ordering::SeqCst)
    }

    /// The writer wrote `n` bytes: wake threads waiting for room, if any (a
    /// waiter counts itself under the lock before checking, so none misses it).
    fn written(&self, n: usize) {
        self.bytes.fetch_sub(n, Ordering::SeqCst);
        self.progress.fetch_add(1, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            let _g = lock(&self.lock);
            self.room.notify_all();
        }
    }
}

impl ConnTx {
    fn new(
        limit: usize,
        max_frame: usize,
        wait: Duration,
    ) -> (Self, mpsc::UnboundedReceiver<bytes::Bytes>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let c = ConnTx {
            tx,
            queued: Arc::default(),
            limit,
            wait,
            max_frame,
            close: tokio_util::sync::CancellationToken::new(),
        };
        (c, rx)
    }

    /// Queues a frame; a peer that has let too much pile up is disconnected.
    fn send(&self, w: &Wire) -> Result<(), RpcError> {
        self.queue(encode(w)?)
    }

    /// As `send`, but from a thread that may block (never the runtime's):
    /// waits for the writer to make room, so many large replies from
    /// blocking threads at once queue in turn rather than overflow the limit
    /// together. They fill half of it at most, leaving the other half to
    /// the runtime's own sends (which cannot wait). Only a peer that lets
    /// `write_timeout` pass without the writer writing anything is given up
    /// on (then the frame is queued as `send` would, and the connection
    /// closes if it does not fit).
    fn send_waiting(&self, w: &Wire) -> Result<(), RpcError> {
        let b = encode(w)?;
        if b.len() > self.max_frame {
            return self.queue(b);
        }
        let n = b.len() + FRAME_OVERHEAD;
        let q = &self.queued;
        let mut progress = q.progress.load(Ordering::SeqCst);
        let mut deadline = std::time::Instant::now() + self.wait;
        // Waiting senders queue one at a time, under the lock.
        let mut g = lock(&q.lock);
        q.waiters.fetch_add(1, Ordering::SeqCst);
        // Room in half the limit, or an empty queue (a frame is at most half).
        while q.load() > 0 && q.load() + n > self.limit / 2 && !self.is_closed() {
            let now = std::time::Instant::now();
            let p = q.progress.load(Ordering::SeqCst);
            if p != progress {
                (progress, deadline) = (p, now + self.wait);
            }
            let left = deadline.saturating_duration_since(now);
            if left.is_zero() {
                break;
            }
            // Bounded so a connection closed meanwhile is noticed.
            g = q
                .room
                .wait_timeout(g, left.min(Duration::from_millis(100)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        q.waiters.fetch_sub(1, Ordering::SeqCst);
        let r = self.queue(b);
        drop(g);
        r
    }

    fn queue(&self, b: Vec<u8>) -> Result<(), RpcError> {
        // The codec would refuse it and end the connection: refuse it here,
        // so only this message fails.
        if b.len() > self.max_frame {
            return Err(RpcError::TooLarge {
                size: b.len(),
                max: self.max_frame,
            });
        }
        // Counted with what a queued frame costs in memory, not just its bytes.
        let n = b.len() + FRAME_OVERHEAD;
        let before = self.queued.bytes.fetch_add(n, Ordering::SeqCst);
        if before + n > self.limit {
            self.queued.bytes.fetch_sub(n, Ordering::SeqCst);
            self.close.cancel();
            return Err(RpcError::Backlog {
                queued: before,
                limit: self.limit,
            });
        }
        self.tx.send(bytes::Bytes::from(b)).map_err(|_| {
            self.queued.bytes.fetch_sub(n, Ordering::SeqCst);
            RpcError::Shutdown
        })
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed() || self.close.is_cancelled()
    }
}

struct Inner {
    conf: RpcConf,
    address: Option<RpcAddress>,
    endpoints: std::sync::Mutex<HashMap<String, mpsc::Sender<Erased>>>,
    conns: std::sync::Mutex<HashMap<RpcAddress, Vec<Conn>>>,
    asks: std::sync::Mutex<HashMap<u64, ReplySlot>>,
    next_id: AtomicU64,
    /// Addresses this process has dialed: they are reached by dialing, never
    /// through a connection that merely claims them.
    dialed_before: std::sync::Mutex<std::collections::HashSet<RpcAddress>>,
    /// Connections in their handshake per source address (a quarter of
    /// the handshake slots each).
    pending_from: slots::PerSource,
    /// Nonces of this process's own handshakes in flight (see dial_handshake).
    dialing: std::sync::Mutex<std::collections::HashSet<[u8; 32]>>,
    /// Connections in their handshake: a new one gives up the oldest when
    /// all `max_pending_handshakes` are taken.
    handshakes: slots::Slots,
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
                conf: conf.clone(),
                address,
                endpoints: Default::default(),
                conns: Default::default(),
                asks: Default::default(),
                next_id: AtomicU64::new(1),
                dialing: Default::default(),
                pending_from: slots::PerSource::new(conf.max_pending_handshakes / 4),
                dialed_before: Default::default(),
                handshakes: slots::Slots::new(conf.max_pending_handshakes),
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
        // Bounded: when a handler falls behind, the connections feeding it
        // stop being read, and TCP pushes back on the peers (whose writes
        // then time out) instead of this process buffering without limit.
        let (etx, mut erx) = mpsc::channel::<Erased>(ENDPOINT_INBOX);
        let (ltx, mut lrx) = mpsc::unbounded_channel::<Local<E::Msg>>();
        lock(&self.inner.endpoints).insert(name.to_string(), etx);
        let this = LocalRef { tx: ltx };
        let ctx = EndpointCtx {
            env: self.clone(),
            name: name.to_string(),
            this: this.clone(),
        };
        let self_addr = Peer {
            addr: self
                .address()
                .cloned()
                .unwrap_or_else(|| RpcAddress::new("local", 0)),
            via: Via::Local,
        };
        let shutdown = self.inner.shutdown.clone();
        self.inner.rt.spawn(async move {
            endpoint.on_start(&ctx);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    e = erx.recv() => match e {
                        Some(Erased::Bytes { from, payload, reply }) => match decode::<E::Msg>(&payload) {
                            Ok(msg) => handle(&ctx.name, || endpoint.receive(&ctx, from, msg, reply)),
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
                        Some(Local::Msg { msg, reply }) => {
                            handle(&ctx.name, || endpoint.receive(&ctx, self_addr.clone(), msg, reply))
                        }
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
        self.send_over(&self.connection(to).1, endpoint, msg)
    }

    /// Encodes `msg` for `endpoint` and queues it on `conn`.
    fn send_over<M: Serialize>(
        &self,
        conn: &ConnTx,
        endpoint: &str,
        msg: &M,
    ) -> Result<(), RpcError> {
        let payload = encode(msg)?;
        self.check_size(payload.len())?;
        conn.send(&Wire::Send {
            to: endpoint.to_string(),
            payload,
        })
    }

    /// As `send`, but only over the live connection `to` opened to this
    /// process (the newest, if several), never one this process dialed and
    /// never dialing: how a server talks to the peers that registered with
    /// it over their own connections (a driver to its executors), whatever
    /// was dialed at their address before (a dead peer's port, reused by a
    /// new one, would otherwise be dialed, and the new peer would rightly
    /// refuse what arrives on a connection it did not open).
    pub fn send_accepted<M: Serialize>(
        &self,
        to: &RpcAddress,
        endpoint: &str,
        msg: &M,
    ) -> Result<(), RpcError> {
        let (_, conn) = self.accepted_connection(to, endpoint)?;
        self.send_over(&conn, endpoint, msg)
    }

    /// `ask` over the connection `send_accepted` would use.
    pub async fn ask_accepted<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        to: &RpcAddress,
        endpoint: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RpcError> {
        let route = self.accepted_connection(to, endpoint)?;
        self.ask_over(route, to, endpoint, req, timeout).await
    }

    /// Sends `req` and waits up to `timeout` for the reply.
    pub async fn ask<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        to: &RpcAddress,
        endpoint: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RpcError> {
        let route = self.connection(to);
        self.ask_over(route, to, endpoint, req, timeout).await
    }

    async fn ask_over<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        (conn_id, conn): (u64, ConnTx),
        to: &RpcAddress,
        endpoint: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RpcError> {
        let payload = encode(req)?;
        self.check_size(payload.len())?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.asks).insert(id, ReplySlot { conn: conn_id, tx });
        let sent = conn.send(&Wire::Ask {
            id,
            to: endpoint.to_string(),
            payload,
        });
        if let Err(e) = sent {
            lock(&self.inner.asks).remove(&id);
            return Err(e);
        }
        let res = tokio::time::timeout(timeout, rx).await;
        lock(&self.inner.asks).remove(&id);
        match res {
            Err(_) => Err(RpcError::Timeout {
                to: to.to_string(),
                endpoint: endpoint.into(),
                after: timeout,
            }),
            Ok(Err(_)) => Err(RpcError::Shutdown),
            Ok(Ok(AskOutcome::Failed(reason))) => Err(RpcError::Connection {
                to: to.to_string(),
                endpoint: endpoint.into(),
                reason,
            }),
            Ok(Ok(AskOutcome::Reply(Err(reason)))) => Err(RpcError::Remote {
                to: to.to_string(),
                endpoint: endpoint.into(),
                reason,
            }),
            Ok(Ok(AskOutcome::Reply(Ok(bytes)))) => decode(&bytes).map_err(RpcError::Codec),
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

    /// The codec of a connection in its handshake: tiny frames only, so a
    /// stranger cannot make this process reserve memory for a huge frame.
    fn handshake_codec(&self) -> LengthDelimitedCodec {
        LengthDelimitedCodec::builder()
            .max_frame_length(HANDSHAKE_FRAME_LIMIT)
            .new_codec()
    }

    /// The newest live connection that `to` opened to this process.
    fn accepted_connection(
        &self,
        to: &RpcAddress,
        endpoint: &str,
    ) -> Result<(u64, ConnTx), RpcError> {
        lock(&self.inner.conns)
            .get(to)
            .and_then(|v| v.iter().rev().find(|c| !c.dialed && !c.tx.is_closed()))
            .map(|c| (c.id, c.tx.clone()))
            .ok_or_else(|| RpcError::Connection {
                to: to.to_string(),
                endpoint: endpoint.into(),
                reason: "no live connection from it".into(),
            })
    }

    /// The id and writer channel of the connection to `to`: a live one this
    /// process dialed; else, for an address it never dialed (a peer that only
    /// connected to us), the connection the peer opened; else a new one dialed
    /// in the background (messages queue meanwhile). A connection that merely
    /// claims an address this process has dialed never carries its traffic.
    fn connection(&self, to: &RpcAddress) -> (u64, ConnTx) {
        let mut conns = lock(&self.inner.conns);
        let dialed_before = lock(&self.inner.dialed_before).contains(to);
        if let Some(c) = conns.get(to).and_then(|v| {
            v.iter()
                .find(|c| c.dialed && !c.tx.is_closed())
                .or_else(|| {
                    v.iter()
                        .find(|c| !dialed_before && !c.dialed && !c.tx.is_closed())
                })
        }) {
            return (c.id, c.tx.clone());
        }
        lock(&self.inner.dialed_before).insert(to.clone());
        let (tx, rx) = ConnTx::new(
            self.inner.conf.max_queued_bytes,
            self.inner.conf.max_message_size,
            self.inner.conf.write_timeout,
        );
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        conns.entry(to.clone()).or_default().push(Conn {
            id,
            tx: tx.clone(),
            dialed: true,
        });
        drop(conns);
        let env = self.clone();
        let to = to.clone();
        self.inner.rt.spawn(async move {
            // A shut-down environment dials no one (an endpoint told its
            // peer is gone by the shutdown itself may try to reconnect).
            let shutdown = env.inner.shutdown.clone();
            let dialed = tokio::select! {
                biased;
                _ = shutdown.cancelled() => Err(None),
                r = env.connect(&to) => r.map_err(Some),
            };
            match dialed {
                Ok(framed) => env.run_conn(framed, to, Via::Dialed, id, rx).await,
                Err(None) => env.drop_conn(&to, id, "the RPC environment is shut down".into()),
                Err(Some(reason)) => {
                    let reason = format!("cannot connect to {to}: {reason}");
                    tracing::warn!("{reason}");
                    env.drop_conn(&to, id, reason);
                }
            }
        });
        (id, tx)
    }

    async fn connect(
        &self,
        to: &RpcAddress,
    ) -> Result<Framed<Stream, LengthDelimitedCodec>, String> {
        let conf = &self.inner.conf;
        let stream = tokio::time::timeout(
            conf.connect_timeout,
            TcpStream::connect((to.host.as_str(), to.port)),
        )
        .await
        .map_err(|_| format!("connect timed out after {:?}", conf.connect_timeout))?
        .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        keep_alive(&stream);
        let stream: Stream = match &conf.tls {
            Some(tls) => {
                let name = rustls_pki_types::ServerName::try_from(to.host.clone())
                    .map_err(|e| format!("'{}' is not a TLS server name: {e}", to.host))?;
                let tls_stream = tokio::time::timeout(
                    conf.handshake_timeout,
                    tls.connector.connect(name, stream),
                )
                .await
                .map_err(|_| "TLS handshake timed out".to_string())?
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
                Box::new(tls_stream)
            }
            None => Box::new(stream),
        };
        let mut framed = Framed::new(stream, self.handshake_codec());
        tokio::time::timeout(conf.handshake_timeout, self.dial_handshake(&mut framed, to))
            .await
            .map_err(|_| format!("handshake timed out after {:?}", conf.handshake_timeout))??;
        framed
            .codec_mut()
            .set_max_frame_length(conf.max_message_size);
        Ok(framed)
    }

    /// The dialer's side of the handshake (see the module doc).
    async fn dial_handshake(
        &self,
        framed: &mut Framed<Stream, LengthDelimitedCodec>,
        to: &RpcAddress,
    ) -> Result<(), String> {
        let mine = nonce();
        // Remembered while in flight, so a Hello reflected back to this
        // process is recognized and refused.
        lock(&self.inner.dialing).insert(mine);
        let r = self.dial_handshake_with(framed, to, mine).await;
        lock(&self.inner.dialing).remove(&mine);
        r
    }

    async fn dial_handshake_with(
        &self,
        framed: &mut Framed<Stream, LengthDelimitedCodec>,
        to: &RpcAddress,
        mine: [u8; 32],
    ) -> Result<(), String> {
        let conf = &self.inner.conf;
        let hello = Wire::Hello {
            version: PROTOCOL_VERSION,
            cluster_id: conf.cluster_id.clone(),
            sender: self.inner.address.clone(),
            target: to.clone(),
            nonce: mine,
        };
        let binding = Binding {
            cluster: &conf.cluster_id,
            target: to,
            sender: self.inner.address.as_ref(),
        };
        send_wire(framed, &hello).await?;
        let (theirs, their_proof) = match next_wire(framed).await? {
            Wire::Challenge { nonce, proof } => (nonce, proof),
            Wire::Rejected { reason } => return Err(format!("refused by peer: {reason:?}")),
            _ => return Err("unexpected handshake answer".into()),
        };
        let my_proof = match &conf.secret {
            Some(secret) => {
                let ok = their_proof
                    .is_some_and(|p| verify(secret, ACCEPTOR, &binding, &mine, &theirs, &p));
                if !ok {
                    let why = if their_proof.is_none() {
                        "the peer does not authenticate; give it this cluster's secret (flint.authenticate.secret)"
                    } else {
                        "the peer failed to prove it knows the shared secret (flint.authenticate.secret differs)"
                    };
                    return Err(why.into());
                }
                Some(proof(secret, DIALER, &binding, &mine, &theirs))
            }
            None => None,
        };
        send_wire(framed, &Wire::Proof { proof: my_proof }).await?;
        match next_wire(framed).await? {
            Wire::HelloOk => Ok(()),
            Wire::Rejected { reason } => Err(format!("refused by peer: {reason:?}")),
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
        // At most a quarter of the handshake slots per source address, so one
        // host holding silent sockets cannot lock out the others (nor evict
        // them, below).
        let Some(per_source) = self.inner.pending_from.take(peer.ip()) else {
            refusal!(
                "refusing connection from {peer}: too many of its connections are in their handshake"
            );
            return;
        };
        // Bounded before anything is read: when every slot is taken, the
        // oldest handshake is given up for this one rather than this one
        // refused, so sockets that send nothing cannot keep honest peers
        // (whose handshakes take a round trip) out for long.
        let Some(slot) = self.inner.handshakes.take(&per_source) else {
            refusal!(
                "refusing connection from {peer}: all {} handshake slots are taken and its host has given up {} of them this second",
                self.inner.conf.max_pending_handshakes,
                slots::EVICTIONS_PER_SECOND
            );
            return;
        };
        let cancelled = slot.token().clone();
        // Only the handshake can be given up: once it is done the connection
        // is registered and runs to its end (dropping it half-way would leave
        // a registered connection nobody reads, blocking its address).
        // Biased: a handshake that completes first is kept.
        let done = tokio::select! {
            biased;
            r = self.accept_handshake_phase(stream, peer) => r,
            _ = cancelled.cancelled() => {
                refusal!(
                    "closing connection from {peer}: all {} handshake slots were taken and it was the oldest",
                    self.inner.conf.max_pending_handshakes
                );
                None
            }
        };
        drop(slot);
        drop(per_source);
        let Some((mut framed, sender)) = done else {
            return;
        };
        let conf = &self.inner.conf;
        framed
            .codec_mut()
            .set_max_frame_length(conf.max_message_size);
        let addr = sender.unwrap_or_else(|| RpcAddress::new(peer.ip().to_string(), peer.port()));
        let (tx, rx) = ConnTx::new(
            conf.max_queued_bytes,
            conf.max_message_size,
            conf.write_timeout,
        );
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.conns)
            .entry(addr.clone())
            .or_default()
            .push(Conn {
                id,
                tx,
                dialed: false,
            });
        self.run_conn(framed, addr, Via::Accepted, id, rx).await;
    }

    /// TLS (if on) and the handshake of an accepted connection, within
    /// `handshake_timeout`: its framed stream and the address the peer
    /// speaks for, or None (refused, logged).
    async fn accept_handshake_phase(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Option<(Framed<Stream, LengthDelimitedCodec>, Option<RpcAddress>)> {
        let _ = stream.set_nodelay(true);
        keep_alive(&stream);
        let conf = &self.inner.conf;
        let stream: Stream = match &conf.tls {
            Some(tls) => {
                match tokio::time::timeout(conf.handshake_timeout, tls.acceptor.accept(stream))
                    .await
                {
                    Ok(Ok(s)) => Box::new(s),
                    Ok(Err(e)) => {
                        refusal!("refusing connection from {peer}: TLS handshake failed: {e}");
                        return None;
                    }
                    Err(_) => {
                        refusal!("closing connection from {peer}: no TLS handshake in time");
                        return None;
                    }
                }
            }
            None => Box::new(stream),
        };
        let mut framed = Framed::new(stream, self.handshake_codec());
        let sender =
            match tokio::time::timeout(conf.handshake_timeout, self.accept_handshake(&mut framed))
                .await
            {
                Ok(Ok(sender)) => sender,
                Ok(Err(Refusal { reason, tell })) => {
                    refusal!("refusing connection from {peer}: {reason}");
                    if tell {
                        let _ = send_wire(&mut framed, &Wire::Rejected { reason }).await;
                    }
                    return None;
                }
                Err(_) => {
                    refusal!(
                        "closing connection from {peer}: no handshake within {:?}",
                        conf.handshake_timeout
                    );
                    return None;
                }
            };
        Some((framed, sender))
    }

    /// Whether a dialer that dialed `target` reached this process: the port
    /// must be the one it listens on, and where both hosts are IP addresses
    /// they must agree (host names are not resolved here; the port and the
    /// proofs, which cover the target, carry the check).
    fn answers_for(&self, target: &RpcAddress) -> bool {
        let Some(me) = &self.inner.address else {
            return false;
        };
        if target.port != me.port {
            return false;
        }
        match (
            target.host.parse::<std::net::IpAddr>(),
            me.host.parse::<std::net::IpAddr>(),
        ) {
            (Ok(t), Ok(m)) => t == m || m.is_unspecified(),
            _ => true,
        }
    }

    /// The acceptor's side of the handshake; returns the address the peer
    /// advertised.
    async fn accept_handshake(
        &self,
        framed: &mut Framed<Stream, LengthDelimitedCodec>,
    ) -> Result<Option<RpcAddress>, Refusal> {
        let conf = &self.inner.conf;
        let quiet = |reason: String| Refusal {
            reason,
            tell: false,
        };
        let tell = |reason: String| Refusal { reason, tell: true };
        let (version, cluster_id, sender, target, theirs) =
            match next_wire(framed).await.map_err(quiet)? {
                Wire::Hello {
                    version,
                    cluster_id,
                    sender,
                    target,
                    nonce,
                } => (version, cluster_id, sender, target, nonce),
                _ => return Err(tell("expected a handshake".into())),
            };
        if lock(&self.inner.dialing).contains(&theirs) {
            return Err(quiet(
                "a handshake of this very process reflected back to it".into(),
            ));
        }
        if let Some(s) = &sender {
            let claimed = self.inner.address.as_ref() == Some(s)
                || lock(&self.inner.conns)
                    .get(s)
                    .is_some_and(|v| v.iter().any(|c| !c.dialed && !c.tx.is_closed()));
            if claimed {
                return Err(tell(format!(
                    "{s} is already connected to this process; a second connection cannot speak for it"
                )));
            }
        }
        if !self.answers_for(&target) {
            return Err(tell(format!(
                "this process is not {target}; it will not answer for it"
            )));
        }
        let binding = Binding {
            cluster: &conf.cluster_id,
            target: &target,
            sender: sender.as_ref(),
        };
        if version != PROTOCOL_VERSION {
            return Err(tell(format!(
                "protocol version {version} is not supported (this process speaks {PROTOCOL_VERSION})"
            )));
        }
        if cluster_id != conf.cluster_id {
            return Err(tell(format!(
                "cluster id '{cluster_id}' does not match '{}'",
                conf.cluster_id
            )));
        }
        let mine = nonce();
        let my_proof = conf
            .secret
            .as_ref()
            .map(|s| proof(s, ACCEPTOR, &binding, &theirs, &mine));
        send_wire(
            framed,
            &Wire::Challenge {
                nonce: mine,
                proof: my_proof,
            },
        )
        .await
        .map_err(quiet)?;
        let their_proof = match next_wire(framed).await.map_err(quiet)? {
            Wire::Proof { proof } => proof,
            _ => return Err(tell("expected the handshake's proof".into())),
        };
        if let Some(secret) = &conf.secret {
            match their_proof {
                None => {
                    return Err(tell(
                        "authentication required: set flint.authenticate.secret to this cluster's secret".into(),
                    ));
                }
                Some(p) if !verify(secret, DIALER, &binding, &theirs, &mine, &p) => {
                    return Err(tell(
                        "authentication failed: the shared secret (flint.authenticate.secret) does not match".into(),
                    ));
                }
                Some(_) => {}
            }
        }
        send_wire(framed, &Wire::HelloOk).await.map_err(quiet)?;
        Ok(sender)
    }

    /// Pumps one established connection until it ends, then reports the
    /// disconnect if no other connection to that peer remains.
    async fn run_conn(
        &self,
        framed: Framed<Stream, LengthDelimitedCodec>,
        peer: RpcAddress,
        via: Via,
        id: u64,
        mut rx: mpsc::UnboundedReceiver<bytes::Bytes>,
    ) {
        let from = Peer {
            addr: peer.clone(),
            via,
        };

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
        let conf = &self.inner.conf;
        let writer = {
            let (queued, close, wait) = (
                writer_tx.queued.clone(),
                writer_tx.close.clone(),
                conf.write_timeout,
            );
            let peer = peer.clone();
            self.inner.rt.spawn(async move {
                while let Some(b) = rx.recv().await {
                    let n = b.len() + FRAME_OVERHEAD;
                    match tokio::time::timeout(wait, sink.send(b)).await {
                        Ok(Ok(())) => queued.written(n),
                        Ok(Err(_)) => break,
                        Err(_) => {
                            tracing::warn!(
                                "{peer} has not read for {wait:?}; closing the connection"
                            );
                            break;
                        }
                    }
                }
                close.cancel();
            })
        };
        let idle = conf.idle_timeout;
        let mut ticker = tokio::time::interval((idle / 4).max(Duration::from_millis(10)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut last_rx = tokio::time::Instant::now();
        let reason = loop {
            let frame = tokio::select! {
                _ = shutdown.cancelled() => break "the RPC environment is shut down".to_string(),
                _ = writer_tx.close.cancelled() => {
                    tracing::warn!("closing connection to {peer}: it stopped reading");
                    break format!(
                        "connection to {peer} closed: the peer stopped reading (write stalled {:?} or more than {} bytes queued)",
                        conf.write_timeout, conf.max_queued_bytes
                    );
                }
                _ = ticker.tick() => {
                    if last_rx.elapsed() > idle {
                        tracing::warn!("closing connection to {peer}: nothing received for {idle:?}");
                        break format!("connection to {peer} closed: nothing received for {idle:?}");
                    }
                    let _ = writer_tx.send(&Wire::Ping);
                    continue;
                }
                f = stream.next() => f,
            };
            last_rx = tokio::time::Instant::now();
            match frame {
                None => break format!("connection to {peer} closed"),
                Some(Err(e)) => {
                    // A peer that went away (a process that exited with
                    // bytes unread resets its connections) is news for the
                    // endpoints (`on_disconnected`), which say what it means;
                    // anything else is this connection's own trouble.
                    if peer_gone(&e) {
                        tracing::debug!("connection to {peer} ended: {e}");
                    } else {
                        tracing::warn!("closing connection to {peer}: {e}");
                    }
                    break format!("connection to {peer} failed: {e}");
                }
                Some(Ok(bytes)) => match decode::<Wire>(&bytes) {
                    Ok(w) => {
                        if let Some((ep, msg)) = self.dispatch(w, &from, id, &writer_tx) {
                            // Waits while the endpoint's inbox is full.
                            tokio::select! {
                                _ = shutdown.cancelled() => break "the RPC environment is shut down".to_string(),
                                _ = ep.send(msg) => {}
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!("closing connection to {peer}: undecodable frame: {e}");
                        break format!("connection to {peer} closed after an undecodable frame");
                    }
                },
            }
        };
        writer.abort();
        self.drop_conn(&peer, id, reason);
    }

    /// Forgets connection `id`, fails the asks waiting on it with `reason`, and
    /// tells the endpoints if no other connection to that peer remains.
    fn drop_conn(&self, peer: &RpcAddress, id: u64, reason: String) {
        let failed: Vec<ReplySlot> = {
            let mut asks = lock(&self.inner.asks);
            let ids: Vec<u64> = asks
                .iter()
                .filter(|(_, s)| s.conn == id)
                .map(|(k, _)| *k)
                .collect();
            ids.into_iter().filter_map(|k| asks.remove(&k)).collect()
        };
        for slot in failed {
            let _ = slot.tx.send(AskOutcome::Failed(reason.clone()));
        }
        // The peer is gone when no connection of the same kind is left: a
        // connection claiming its address cannot hide the loss of the one
        // this process dialed.
        let none_left = {
            let mut conns = lock(&self.inner.conns);
            match conns.get_mut(peer) {
                Some(v) => {
                    let dialed = v.iter().find(|c| c.id == id).is_some_and(|c| c.dialed);
                    v.retain(|c| c.id != id);
                    let left = v.iter().any(|c| c.dialed == dialed);
                    if v.is_empty() {
                        conns.remove(peer);
                    }
                    !left
                }
                None => true,
            }
        };
        if none_left && !self.inner.shutdown.is_cancelled() {
            for tx in lock(&self.inner.endpoints).values() {
                // Never lost, never blocking the caller: queued when there is
                // room, else delivered by a task that waits for room.
                if let Err(mpsc::error::TrySendError::Full(ev)) =
                    tx.try_send(Erased::Disconnected(peer.clone()))
                {
                    let tx = tx.clone();
                    self.inner.rt.spawn(async move {
                        let _ = tx.send(ev).await;
                    });
                }
            }
        }
    }

    /// Handles a frame; a message for an endpoint comes back with the
    /// endpoint's inbox, for the caller to deliver (waiting for room).
    fn dispatch(
        &self,
        w: Wire,
        peer: &Peer,
        conn_id: u64,
        conn: &ConnTx,
    ) -> Option<(mpsc::Sender<Erased>, Erased)> {
        match w {
            Wire::Send { to, payload } => match lock(&self.inner.endpoints).get(&to) {
                Some(ep) => {
                    return Some((
                        ep.clone(),
                        Erased::Bytes {
                            from: peer.clone(),
                            payload,
                            reply: None,
                        },
                    ));
                }
                // Endpoints leave as the environment shuts down, while its
                // connections may still hand over a frame read just before.
                None if self.inner.shutdown.is_cancelled() => {
                    tracing::debug!("message from {peer} for '{to}' dropped: shutting down")
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
                        return Some((
                            ep.clone(),
                            Erased::Bytes {
                                from: peer.clone(),
                                payload,
                                reply: Some(reply),
                            },
                        ));
                    }
                    None => reply.fail(format!("no endpoint named '{to}'")),
                }
            }
            Wire::Reply { id, result } => {
                // Only the connection the ask went out on may answer it.
                let slot = {
                    let mut asks = lock(&self.inner.asks);
                    match asks.get(&id) {
                        Some(s) if s.conn == conn_id => asks.remove(&id),
                        Some(_) => {
                            tracing::warn!(
                                "reply {id} from {peer} arrived on a connection the ask did not use; ignored"
                            );
                            None
                        }
                        None => None,
                    }
                };
                if let Some(slot) = slot {
                    let _ = slot.tx.send(AskOutcome::Reply(
                        result.map(serde_bytes::ByteBuf::into_vec),
                    ));
                }
            }
            Wire::Ping => {
                // A peer that is not reading our answers needs no more of them
                // (and a flood of pings must not grow our queue).
                if conn.queued.load() == 0 {
                    let _ = conn.send(&Wire::Pong);
                }
            }
            Wire::Pong => {}
            Wire::Hello { .. }
            | Wire::Challenge { .. }
            | Wire::Proof { .. }
            | Wire::HelloOk
            | Wire::Rejected { .. } => {
                tracing::warn!("unexpected handshake message from {peer} ignored");
            }
        }
        None
    }
}

/// Whether a read failed because the peer closed or reset the connection.
fn peer_gone(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
    )
}

/// TCP keepalive on a connection, so a peer whose host vanished is noticed
/// by the kernel too (the pings notice it sooner).
fn keep_alive(stream: &TcpStream) {
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10));
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&ka) {
        tracing::debug!("cannot set TCP keepalive: {e}");
    }
}

/// What refused connections cost in log: at most `REFUSALS_PER_SECOND`
/// lines a second, then one line saying how many were left out (a stranger
/// opening connections in a loop would otherwise grow the log by megabytes a
/// second).
const REFUSALS_PER_SECOND: u32 = 10;

fn refusal_logged() -> bool {
    static STATE: std::sync::Mutex<Option<(std::time::Instant, u32, u64)>> =
        std::sync::Mutex::new(None);
    let mut st = lock(&STATE);
    let now = std::time::Instant::now();
    let (start, n, dropped) = st.get_or_insert((now, 0, 0));
    if now.duration_since(*start) >= Duration::from_secs(1) {
        if *dropped > 0 {
            tracing::warn!("{dropped} more refused connections were not logged");
        }
        (*start, *n, *dropped) = (now, 0, 0);
    }
    if *n < REFUSALS_PER_SECOND {
        *n += 1;
        true
    } else {
        *dropped += 1;
        false
    }
}

/// Runs one handler call; a panic in it is logged and the message dropped, so
/// one bad message cannot stop the endpoint (and with it the daemon).
fn handle(name: &str, f: impl FnOnce()) {
    if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        let what = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        tracing::error!("{name}: handler panicked ({what}); message dropped, endpoint continues");
    }
}

/// Why a handshake was refused; `tell` says whether the peer gets the reason
/// (not when it broke the protocol or the connection).
struct Refusal {
    reason: String,
    tell: bool,
}

async fn send_wire(
    framed: &mut Framed<Stream, LengthDelimitedCodec>,
    w: &Wire,
) -> Result<(), String> {
    let b = encode(w).map_err(|e| e.to_string())?;
    framed
        .send(bytes::Bytes::from(b))
        .await
        .map_err(|e| e.to_string())
}

async fn next_wire(framed: &mut Framed<Stream, LengthDelimitedCodec>) -> Result<Wire, String> {
    let frame = framed
        .next()
        .await
        .ok_or("connection closed during the handshake")?
        .map_err(|e| format!("bad frame during the handshake: {e}"))?;
    decode::<Wire>(&frame).map_err(|e| format!("undecodable handshake: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::codec::Decoder;

    fn cases() -> u32 {
        std::env::var("FLINT_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(512)
    }

    /// Valid encodings of every kind of frame, to mutate.
    fn samples() -> Vec<Vec<u8>> {
        let addr = Some(RpcAddress::new("127.0.0.1", 7077));
        [
            Wire::Hello {
                version: PROTOCOL_VERSION,
                cluster_id: "flint".into(),
                sender: addr.clone(),
                target: RpcAddress::new("127.0.0.1", 7077),
                nonce: [7; 32],
            },
            Wire::Challenge {
                nonce: [1; 32],
                proof: Some([2; 32]),
            },
            Wire::Proof { proof: None },
            Wire::HelloOk,
            Wire::Rejected {
                reason: "no".into(),
            },
            Wire::Send {
                to: "Worker".into(),
                payload: vec![1, 2, 3],
            },
            Wire::Ask {
                id: 9,
                to: "Master".into(),
                payload: vec![0; 40],
            },
            Wire::Reply {
                id: 9,
                result: Err("x".into()),
            },
        ]
        .iter()
        .map(|w| encode(w).unwrap())
        .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(cases()))]
        /// Bytes from the network: random streams through the frame codec (as
        /// before a handshake, 4 KiB frames) and mutated valid frames through the
        /// message decoder end in a value or an error, never a panic, and never
        /// make the codec reserve more than its limit.
        #[test]
        fn frames_and_messages_from_strangers_never_panic(
            stream in proptest::collection::vec(proptest::num::u8::ANY, 0..2048),
            pick in 0usize..8,
            flips in proptest::collection::vec((0usize..512, 1u8..=255), 0..6),
            cut in proptest::option::of(0usize..512),
        ) {
            let mut codec = LengthDelimitedCodec::builder()
                .max_frame_length(HANDSHAKE_FRAME_LIMIT)
                .new_codec();
            let mut buf = bytes::BytesMut::from(&stream[..]);
            for _ in 0..64 {
                match codec.decode(&mut buf) {
                    Ok(Some(frame)) => {
                        let _ = decode::<Wire>(&frame);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            proptest::prop_assert!(buf.capacity() <= 2048 + HANDSHAKE_FRAME_LIMIT + 64);
            let mut b = samples()[pick].clone();
            let n = b.len();
            for (at, x) in flips {
                b[at % n] ^= x;
            }
            if let Some(c) = cut {
                b.truncate(c % (n + 1));
            }
            let _ = decode::<Wire>(&b);
        }
    }

    #[test]
    fn proofs_bind_the_role_the_cluster_both_addresses_and_both_nonces() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let m = RpcAddress::new("127.0.0.1", 7077);
        let w = RpcAddress::new("127.0.0.1", 7078);
        let bind = |cluster, target, sender| Binding {
            cluster,
            target,
            sender,
        };
        let base = bind("c", &m, Some(&w));
        let p = proof("s", DIALER, &base, &a, &b);
        assert!(verify("s", DIALER, &base, &a, &b, &p));
        assert!(
            !verify("s", ACCEPTOR, &base, &a, &b, &p),
            "a dialer's proof is not an acceptor's"
        );
        assert!(!verify(
            "s",
            DIALER,
            &bind("other", &m, Some(&w)),
            &a,
            &b,
            &p
        ));
        assert!(
            !verify("s", DIALER, &bind("c", &w, Some(&w)), &a, &b, &p),
            "another target"
        );
        assert!(
            !verify("s", DIALER, &bind("c", &m, None), &a, &b, &p),
            "another sender"
        );
        assert!(
            !verify("s", DIALER, &base, &b, &a, &p),
            "nonces are not interchangeable"
        );
        assert!(!verify("t", DIALER, &base, &a, &b, &p));
        assert_ne!(nonce(), nonce());
    }

    /// A raw peer: dials `addr`, completes the handshake without a secret,
    /// then does whatever the test does with the framed stream.
    async fn raw_peer(addr: &RpcAddress) -> Framed<Stream, LengthDelimitedCodec> {
        let stream = TcpStream::connect((addr.host.as_str(), addr.port))
            .await
            .unwrap();
        let mut f = Framed::new(
            Box::new(stream) as Stream,
            LengthDelimitedCodec::builder()
                .max_frame_length(16 << 20)
                .new_codec(),
        );
        let hello = Wire::Hello {
            version: PROTOCOL_VERSION,
            cluster_id: "flint".into(),
            sender: None,
            target: addr.clone(),
            nonce: [3; 32],
        };
        send_wire(&mut f, &hello).await.unwrap();
        assert!(matches!(
            next_wire(&mut f).await.unwrap(),
            Wire::Challenge { .. }
        ));
        send_wire(&mut f, &Wire::Proof { proof: None })
            .await
            .unwrap();
        assert!(matches!(next_wire(&mut f).await.unwrap(), Wire::HelloOk));
        f
    }

    struct Flood(Arc<std::sync::Mutex<Vec<String>>>);
    impl Endpoint for Flood {
        type Msg = u32;
        fn receive(&mut self, ctx: &EndpointCtx<u32>, from: Peer, n: u32, _: Option<Replier>) {
            // Answer one small message with `n` large ones.
            for i in 0..n {
                if let Err(e) = ctx.env.send(&from.addr, "x", &vec![i as u8; 64 << 10]) {
                    self.0.lock().unwrap().push(e.to_string());
                    return;
                }
            }
            self.0.lock().unwrap().push("all queued".into());
        }
    }

    #[tokio::test]
    async fn a_silent_peer_is_pinged_then_dropped() {
        let conf = RpcConf {
            idle_timeout: Duration::from_millis(400),
            ..RpcConf::default()
        };
        let srv = RpcEnv::server("127.0.0.1", 0, "127.0.0.1", conf)
            .await
            .unwrap();
        let mut f = raw_peer(srv.address().unwrap()).await;
        let mut pings = 0;
        // Read only: the peer never answers, so after 400 ms the server hangs up.
        let ended = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(Ok(frame)) = f.next().await {
                if matches!(decode::<Wire>(&frame), Ok(Wire::Ping)) {
                    pings += 1;
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "the server kept an idle connection open");
        assert!(pings >= 1, "the server pinged before giving up");
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_is_disconnected_not_buffered() {
        let conf = RpcConf {
            max_queued_bytes: 1 << 20,
            write_timeout: Duration::from_millis(500),
            ..RpcConf::default()
        };
        let srv = RpcEnv::server("127.0.0.1", 0, "127.0.0.1", conf)
            .await
            .unwrap();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        srv.setup_endpoint("flood", Flood(log.clone()));
        let mut f = raw_peer(srv.address().unwrap()).await;
        // Ask for 1,000 x 64 KiB (64 MiB) and never read.
        send_wire(
            &mut f,
            &Wire::Send {
                to: "flood".into(),
                payload: encode(&1000u32).unwrap(),
            },
        )
        .await
        .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let got = log.lock().unwrap().clone();
            if let Some(l) = got.first() {
                assert!(l.contains("does not read"), "{l}");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the flood was never cut off"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The connection is closed: draining it ends.
        let ended = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(Ok(_)) = f.next().await {}
        })
        .await;
        assert!(ended.is_ok(), "the connection stayed open");
    }

    /// Answers every ask with 256 KiB from a blocking thread, as the
    /// cluster's large replies are.
    struct BigReplies;
    impl Endpoint for BigReplies {
        type Msg = u8;
        fn receive(&mut self, _: &EndpointCtx<u8>, _: Peer, b: u8, reply: Option<Replier>) {
            if let Some(rp) = reply {
                tokio::task::spawn_blocking(move || {
                    rp.reply_blocking(&serde_bytes::ByteBuf::from(vec![b; 256 << 10]))
                });
            }
        }
    }

    async fn big_replies_to_a_raw_peer() -> (RpcEnv, Framed<Stream, LengthDelimitedCodec>) {
        let srv = RpcEnv::server("127.0.0.1", 0, "127.0.0.1", small_queue())
            .await
            .unwrap();
        srv.setup_endpoint("big", BigReplies);
        let f = raw_peer(srv.address().unwrap()).await;
        (srv, f)
    }

    fn small_queue() -> RpcConf {
        RpcConf {
            max_queued_bytes: 1 << 20,
            write_timeout: Duration::from_millis(500),
            ..RpcConf::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replies_from_blocking_threads_wait_for_room_in_the_queue() {
        let srv = RpcEnv::server("127.0.0.1", 0, "127.0.0.1", small_queue())
            .await
            .unwrap();
        srv.setup_endpoint("big", BigReplies);
        let client = RpcEnv::client(RpcConf::default());
        let to = srv.address().unwrap().clone();
        // 32 x 256 KiB at once: eight times what may be queued.
        let asks = (0..32u8).map(|i| {
            let (client, to) = (client.clone(), to.clone());
            async move {
                let got: serde_bytes::ByteBuf = client
                    .ask(&to, "big", &i, Duration::from_secs(30))
                    .await
                    .unwrap();
                assert!(got.len() == 256 << 10 && got.iter().all(|b| *b == i));
            }
        });
        futures::future::join_all(asks).await;
    }

    #[tokio::test]
    async fn a_peer_that_reads_no_blocking_replies_is_still_disconnected() {
        let (srv, mut f) = big_replies_to_a_raw_peer().await;
        // 16 MiB of replies: more than loopback's socket buffers hold.
        for id in 0..64u64 {
            ask_raw(&mut f, id, "big", 1).await;
        }
        // Not reading until the server has given up on the connection.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while lock(&srv.inner.conns).values().any(|v| !v.is_empty()) {
            assert!(
                std::time::Instant::now() < deadline,
                "a peer that does not read kept its connection"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // What was written before it stopped is there; then the stream ends.
        let ended = tokio::time::timeout(Duration::from_secs(20), async {
            let mut replies = 0;
            while let Some(Ok(_)) = f.next().await {
                replies += 1;
            }
            replies
        })
        .await;
        let replies = ended.expect("the connection stayed open");
        assert!(replies < 64, "every reply was sent: {replies}");
    }

    /// Byte 0: 256 KiB from a blocking thread (`reply_blocking`); byte 1:
    /// 258 KiB from the runtime's thread (`reply`, which cannot wait), as a
    /// launch carrying slices is sent.
    struct Mixed;
    impl Endpoint for Mixed {
        type Msg = u8;
        fn receive(&mut self, _: &EndpointCtx<u8>, _: Peer, b: u8, reply: Option<Replier>) {
            let Some(rp) = reply else { return };
            if b == 0 {
                tokio::task::spawn_blocking(move || {
                    rp.reply_blocking(&serde_bytes::ByteBuf::from(vec![0u8; 256 << 10]))
                });
            } else {
                rp.reply(&serde_bytes::ByteBuf::from(vec![1u8; 258 << 10]));
            }
        }
    }

    /// Reads up to `want` frames, pausing after each; how many came.
    async fn read_frames(
        f: &mut Framed<Stream, LengthDelimitedCodec>,
        want: usize,
        pause: Duration,
    ) -> usize {
        let mut got = 0;
        while got < want {
            match tokio::time::timeout(Duration::from_secs(10), f.next()).await {
                Ok(Some(Ok(_))) => got += 1,
                _ => break,
            }
            tokio::time::sleep(pause).await;
        }
        got
    }

    async fn ask_raw(f: &mut Framed<Stream, LengthDelimitedCodec>, id: u64, to: &str, b: u8) {
        let ask = Wire::Ask {
            id,
            to: to.into(),
            payload: encode(&b).unwrap(),
        };
        send_wire(f, &ask).await.unwrap();
    }

    /// A peer that reads a frame every 50 ms keeps its connection, though
    /// its 64 replies wait far longer than `write_timeout` (500 ms) in all:
    /// a waiter's clock restarts whenever the writer writes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_but_steady_reader_keeps_its_connection() {
        let (_srv, mut f) = big_replies_to_a_raw_peer().await;
        for id in 0..64u64 {
            ask_raw(&mut f, id, "big", 1).await;
        }
        let got = read_frames(&mut f, 64, Duration::from_millis(50)).await;
        assert_eq!(got, 64, "the connection closed after {got} replies");
    }

    /// Waiting replies fill half the queue at most: a reply from the
    /// runtime's thread, which cannot wait, still fits beside them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_replies_leave_room_for_sends_that_cannot_wait() {
        let srv = RpcEnv::server(
            "127.0.0.1",
            0,
            "127.0.0.1",
            RpcConf {
                max_queued_bytes: 1 << 20,
                write_timeout: Duration::from_secs(5),
                ..RpcConf::default()
            },
        )
        .await
        .unwrap();
        srv.setup_endpoint("mixed", Mixed);
        let mut f = raw_peer(srv.address().unwrap()).await;
        for id in 0..64u64 {
            ask_raw(&mut f, id, "mixed", 0).await;
        }
        // Not reading until replies wait for room: one is waiting and the
        // queue holds at least half the limit less a reply.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let waiting = || {
            lock(&srv.inner.conns).values().flatten().any(|c| {
                let q = &c.tx.queued;
                q.waiters.load(Ordering::SeqCst) > 0 && q.load() + (260 << 10) > (1 << 20) / 2
            })
        };
        while !waiting() {
            assert!(std::time::Instant::now() < deadline, "no reply waited");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        ask_raw(&mut f, 64, "mixed", 1).await;
        let got = read_frames(&mut f, 65, Duration::ZERO).await;
        assert_eq!(got, 65, "the connection closed after {got} replies");
    }

    struct Slow {
        gate: std::sync::mpsc::Receiver<()>,
        seen: Arc<AtomicUsize>,
    }
    impl Endpoint for Slow {
        type Msg = Vec<u8>;
        fn receive(&mut self, _: &EndpointCtx<Vec<u8>>, _: Peer, _: Vec<u8>, _: Option<Replier>) {
            if self.seen.fetch_add(1, Ordering::SeqCst) == 0 {
                // The first message waits until the test opens the gate
                // (off the runtime's core, as a slow handler would hold it).
                tokio::task::block_in_place(|| {
                    let _ = self.gate.recv();
                });
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_endpoint_pushes_back_on_its_peers_instead_of_buffering() {
        let srv = RpcEnv::server("127.0.0.1", 0, "127.0.0.1", RpcConf::default())
            .await
            .unwrap();
        let (open, gate) = std::sync::mpsc::channel();
        let seen = Arc::new(AtomicUsize::new(0));
        srv.setup_endpoint(
            "slow",
            Slow {
                gate,
                seen: seen.clone(),
            },
        );
        let mut f = raw_peer(srv.address().unwrap()).await;
        let frame = Wire::Send {
            to: "slow".into(),
            payload: encode(&vec![7u8; 4096]).unwrap(),
        };
        // Write until a write stalls: the inbox (1,024 messages) and the
        // socket buffers are full, and nothing more is read from us.
        let mut sent = 0usize;
        let stalled = loop {
            match tokio::time::timeout(Duration::from_secs(2), send_wire(&mut f, &frame)).await {
                Ok(Ok(())) => sent += 1,
                Ok(Err(e)) => panic!("write failed: {e}"),
                Err(_) => break true,
            }
            if sent > 200_000 {
                break false;
            }
        };
        assert!(
            stalled,
            "{sent} messages (800 MB) accepted from a peer while the endpoint was stuck"
        );
        // Far fewer than were offered: the inbox bound, plus what the kernel buffers.
        assert!(sent < 20_000, "{sent} messages buffered");
        open.send(()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while seen.load(Ordering::SeqCst) < sent {
            assert!(std::time::Instant::now() < deadline, "messages were lost");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Answers an ask for N bytes with N bytes.
    struct Sized;
    impl Endpoint for Sized {
        type Msg = usize;
        fn receive(&mut self, _: &EndpointCtx<usize>, _: Peer, n: usize, r: Option<Replier>) {
            if let Some(r) = r {
                r.reply(&vec![1u8; n]);
            }
        }
    }

    #[tokio::test]
    async fn a_reply_over_the_frame_limit_fails_that_ask_not_the_connection() {
        let conf = RpcConf {
            max_message_size: 64 << 10,
            ..RpcConf::default()
        };
        let srv = RpcEnv::server("127.0.0.1", 0, "127.0.0.1", conf.clone())
            .await
            .unwrap();
        srv.setup_endpoint("sized", Sized);
        let addr = srv.address().unwrap().clone();
        let cli = RpcEnv::client(conf);
        let t = Duration::from_secs(20);
        let err = cli
            .ask::<_, Vec<u8>>(&addr, "sized", &(100usize << 10), t)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("over the frame limit"), "{err}");
        // The same connection still answers.
        let ok: Vec<u8> = cli.ask(&addr, "sized", &1000usize, t).await.unwrap();
        assert_eq!(ok.len(), 1000);
    }

    /// A man in the middle who has no secret takes a dialer's Hello and
    /// relays it to another cluster member, or back to the dialer itself, to
    /// borrow a valid proof: both refuse, because the Hello names the address
    /// the dialer dialed and proofs cover it.
    #[tokio::test]
    async fn a_handshake_cannot_be_relayed_or_reflected() {
        let conf = RpcConf {
            secret: Some("cluster secret".into()),
            ..RpcConf::default()
        };
        let member = RpcEnv::server("127.0.0.1", 0, "127.0.0.1", conf.clone())
            .await
            .unwrap();
        let victim = RpcEnv::server("127.0.0.1", 0, "127.0.0.1", conf)
            .await
            .unwrap();
        let evil = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let evil_addr = RpcAddress::new("127.0.0.1", evil.local_addr().unwrap().port());
        // The victim dials the attacker (say, squatting the master's address).
        let _ = victim.send(&evil_addr, "Master", &1u32);
        let (sock, _) = evil.accept().await.unwrap();
        let mut from_victim = Framed::new(Box::new(sock) as Stream, LengthDelimitedCodec::new());
        let hello = from_victim.next().await.unwrap().unwrap();
        assert!(matches!(decode::<Wire>(&hello), Ok(Wire::Hello { .. })));
        for (who, addr) in [
            ("another member", member.address().unwrap().clone()),
            ("the victim itself", victim.address().unwrap().clone()),
        ] {
            let sock = TcpStream::connect((addr.host.as_str(), addr.port))
                .await
                .unwrap();
            let mut relay = Framed::new(Box::new(sock) as Stream, LengthDelimitedCodec::new());
            relay.send(hello.clone().freeze()).await.unwrap();
            // Closed without an answer (a reflected handshake) is a refusal too.
            if let Some(Ok(answer)) = relay.next().await {
                match decode::<Wire>(&answer) {
                    Ok(Wire::Rejected { reason }) => {
                        assert!(reason.contains("is not"), "{who}: {reason}")
                    }
                    Ok(Wire::Challenge { .. }) => panic!("{who} answered a relayed handshake"),
                    _ => panic!("{who}: unexpected answer"),
                }
            }
        }
    }

    #[derive(Default, Clone)]
    struct Seen(Arc<std::sync::Mutex<Vec<String>>>);
    impl Seen {
        async fn wait(&self, what: &str) {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while !self.0.lock().unwrap().iter().any(|l| l.contains(what)) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no '{what}': {:?}",
                    self.0.lock().unwrap()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    struct Probe(Seen);
    impl Endpoint for Probe {
        type Msg = u32;
        fn receive(&mut self, _: &EndpointCtx<u32>, from: Peer, n: u32, reply: Option<Replier>) {
            if n == 0 {
                panic!("bad message");
            }
            self.0
                .0
                .lock()
                .unwrap()
                .push(format!("got {n} from {from}"));
            if let Some(r) = reply {
                r.reply(&n);
            }
        }
        fn on_disconnected(&mut self, _: &EndpointCtx<u32>, peer: &RpcAddress) {
            self.0.0.lock().unwrap().push(format!("gone {peer}"));
        }
    }

    /// A raw peer that completes the handshake claiming `sender`.
    async fn claimant(
        to: &RpcAddress,
        sender: RpcAddress,
    ) -> Result<Framed<Stream, LengthDelimitedCodec>, String> {
        let sock = TcpStream::connect((to.host.as_str(), to.port))
            .await
            .unwrap();
        let mut f = Framed::new(Box::new(sock) as Stream, LengthDelimitedCodec::new());
        let hello = Wire::Hello {
            version: PROTOCOL_VERSION,
            cluster_id: "flint".into(),
            sender: Some(sender),
            target: to.clone(),
            nonce: nonce(),
        };
        send_wire(&mut f, &hello).await?;
        match next_wire(&mut f).await? {
            Wire::Challenge { .. } => {}
            Wire::Rejected { reason } => return Err(reason),
            _ => return Err("unexpected".into()),
        }
        send_wire(&mut f, &Wire::Proof { proof: None }).await?;
        match next_wire(&mut f).await? {
            Wire::HelloOk => Ok(f),
            Wire::Rejected { reason } => Err(reason),
            _ => Err("unexpected".into()),
        }
    }

    #[tokio::test]
    async fn a_connection_claiming_a_dialed_address_never_takes_its_traffic() {
        let seen = Seen::default();
        let m = RpcEnv::server("127.0.0.1", 0, "127.0.0.1", RpcConf::default())
            .await
            .unwrap();
        m.setup_endpoint("probe", Probe(seen.clone()));
        let w = RpcEnv::server("127.0.0.1", 0, "127.0.0.1", RpcConf::default())
            .await
            .unwrap();
        let w_seen = Seen::default();
        w.setup_endpoint("probe", Probe(w_seen.clone()));
        let m_addr = m.address().unwrap().clone();
        let got: u32 = w
            .ask(&m_addr, "probe", &7u32, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(got, 7);
        // A stranger connects to W claiming to be M.
        let mut stranger = claimant(w.address().unwrap(), m_addr.clone())
            .await
            .unwrap();
        // A second claim of the same address is refused while one is live.
        let again = claimant(w.address().unwrap(), m_addr.clone())
            .await
            .err()
            .unwrap();
        assert!(again.contains("already connected"), "{again}");
        // M goes away: W hears of it although the stranger's claim remains...
        m.shutdown();
        w_seen.wait(&format!("gone {m_addr}")).await;
        // ...and W's next message for M is dialed afresh (and fails), never
        // handed to the stranger.
        let e = w
            .ask::<_, u32>(&m_addr, "probe", &8u32, Duration::from_secs(10))
            .await;
        assert!(e.is_err());
        let leaked = tokio::time::timeout(Duration::from_millis(300), async {
            loop {
                match stranger.next().await {
                    Some(Ok(f)) => {
                        if matches!(decode::<Wire>(&f), Ok(Wire::Ask { .. } | Wire::Send { .. })) {
                            return true;
                        }
                    }
                    _ => return false,
                }
            }
        })
        .await;
        assert_ne!(leaked, Ok(true), "the stranger received W's traffic for M");
    }

    #[tokio::test]
    async fn a_handler_that_panics_drops_the_message_not_the_endpoint() {
        let seen = Seen::default();
        let srv = RpcEnv::server("127.0.0.1", 0, "127.0.0.1", RpcConf::default())
            .await
            .unwrap();
        srv.setup_endpoint("probe", Probe(seen.clone()));
        let c = RpcEnv::client(RpcConf::default());
        let addr = srv.address().unwrap().clone();
        c.send(&addr, "probe", &0u32).unwrap();
        let got: u32 = c
            .ask(&addr, "probe", &5u32, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(got, 5);
        seen.wait("got 5").await;
    }
}
