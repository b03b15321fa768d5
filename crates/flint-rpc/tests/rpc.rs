//! Two RPC environments on loopback: ask/reply, send, disconnect events, bad
//! bytes, size limits and handshake refusal.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flint_rpc::{Endpoint, EndpointCtx, Peer, Replier, RpcAddress, RpcConf, RpcEnv, RpcError, Via};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

#[derive(Serialize, Deserialize, Debug)]
enum Msg {
    Echo(String),
    Note(u32),
    Big(Vec<u8>),
}

#[derive(Default, Clone)]
struct Log(Arc<Mutex<Vec<String>>>);

struct Echo(Log);

impl Endpoint for Echo {
    type Msg = Msg;
    fn receive(&mut self, _ctx: &EndpointCtx<Msg>, from: Peer, msg: Msg, reply: Option<Replier>) {
        match msg {
            Msg::Echo(s) => {
                assert_eq!(from.via, Via::Accepted, "the client dialed us");
                if let Some(r) = reply {
                    r.reply(&format!("{s} (from {from})"));
                }
            }
            Msg::Note(n) => self
                .0
                .0
                .lock()
                .unwrap()
                .push(format!("note {n} from {from}")),
            Msg::Big(b) => self.0.0.lock().unwrap().push(format!("big {}", b.len())),
        }
    }
    fn on_disconnected(&mut self, _ctx: &EndpointCtx<Msg>, peer: &RpcAddress) {
        self.0
            .0
            .lock()
            .unwrap()
            .push(format!("disconnected {peer}"));
    }
}

async fn wait_for(log: &Log, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.0.lock().unwrap().iter().any(|l| l.contains(what)) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for '{what}': {:?}",
            log.0.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn server(log: &Log) -> RpcEnv {
    let env = RpcEnv::server("127.0.0.1", 0, "127.0.0.1", RpcConf::default())
        .await
        .unwrap();
    env.setup_endpoint("echo", Echo(log.clone()));
    env
}

#[tokio::test]
async fn ask_send_and_disconnect() {
    let log = Log::default();
    let srv = server(&log).await;
    let addr = srv.address().unwrap().clone();
    let client = RpcEnv::server("127.0.0.1", 0, "127.0.0.1", RpcConf::default())
        .await
        .unwrap();
    let me = client.address().unwrap().clone();
    let r: String = client
        .ask(
            &addr,
            "echo",
            &Msg::Echo("hi".into()),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(
        r,
        format!("hi (from {me})"),
        "the server sees the client's advertised address"
    );
    client.send(&addr, "echo", &Msg::Note(7)).unwrap();
    wait_for(&log, &format!("note 7 from {me}")).await;
    // Asking an unknown endpoint is a clear error, not a hang.
    let e = client
        .ask::<_, String>(&addr, "nobody", &Msg::Note(1), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no endpoint named 'nobody'"), "{e}");
    client.shutdown();
    wait_for(&log, &format!("disconnected {me}")).await;
}

#[tokio::test]
async fn bad_bytes_do_not_disturb_the_server() {
    let log = Log::default();
    let srv = server(&log).await;
    let addr = srv.address().unwrap().clone();
    for junk in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0xff; 64][..],
        &[0, 0, 0, 3, 1, 2, 3][..],
        &[0x7f, 0xff, 0xff, 0xff][..],
    ] {
        let mut s = tokio::net::TcpStream::connect((addr.host.as_str(), addr.port))
            .await
            .unwrap();
        s.write_all(junk).await.unwrap();
        drop(s);
    }
    let client = RpcEnv::client(RpcConf::default());
    let r: String = client
        .ask(
            &addr,
            "echo",
            &Msg::Echo("still here".into()),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(r.starts_with("still here"));
}

#[tokio::test]
async fn oversized_messages_are_refused_and_handshakes_checked() {
    let log = Log::default();
    let conf = RpcConf {
        max_message_size: 1 << 16,
        ..RpcConf::default()
    };
    let srv = RpcEnv::server("127.0.0.1", 0, "127.0.0.1", conf.clone())
        .await
        .unwrap();
    srv.setup_endpoint("echo", Echo(log.clone()));
    let addr = srv.address().unwrap().clone();
    let client = RpcEnv::client(conf);
    let e = client
        .send(&addr, "echo", &Msg::Big(vec![0; 1 << 17]))
        .unwrap_err();
    assert!(matches!(e, RpcError::TooLarge { .. }), "{e}");
    client
        .send(&addr, "echo", &Msg::Big(vec![0; 1000]))
        .unwrap();
    wait_for(&log, "big 1000").await;

    // Another cluster id: refused at the handshake, and the ask fails at once
    // with the peer's reason (not a timeout).
    let stranger = RpcEnv::client(RpcConf {
        cluster_id: "other".into(),
        ..RpcConf::default()
    });
    let e = stranger
        .ask::<_, String>(
            &addr,
            "echo",
            &Msg::Echo("x".into()),
            Duration::from_secs(60),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, RpcError::Connection { .. }) && e.to_string().contains("cluster id 'other'"),
        "{e}"
    );
    // A server with a secret refuses peers without it.
    let locked = RpcEnv::server(
        "127.0.0.1",
        0,
        "127.0.0.1",
        RpcConf {
            secret: Some("s3cret".into()),
            ..RpcConf::default()
        },
    )
    .await
    .unwrap();
    locked.setup_endpoint("echo", Echo(log.clone()));
    let la = locked.address().unwrap().clone();
    let e = client
        .ask::<_, String>(&la, "echo", &Msg::Echo("x".into()), Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("authentication required"), "{e}");
    let wrong = RpcEnv::client(RpcConf {
        secret: Some("guess".into()),
        ..RpcConf::default()
    });
    let e = wrong
        .ask::<_, String>(&la, "echo", &Msg::Echo("x".into()), Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("failed to prove"), "{e}");
    // A dialer with a secret does not talk to a peer that cannot prove it.
    let e = wrong
        .ask::<_, String>(
            &addr,
            "echo",
            &Msg::Echo("x".into()),
            Duration::from_secs(60),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("does not authenticate"), "{e}");
    let friend = RpcEnv::client(RpcConf {
        secret: Some("s3cret".into()),
        ..RpcConf::default()
    });
    let ok: String = friend
        .ask(&la, "echo", &Msg::Echo("y".into()), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(ok.starts_with('y'));
}

/// Reads what a dialer sends until it stops: the handshake's bytes.
async fn sniff_handshake(secret: &str) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let client = RpcEnv::client(RpcConf {
        secret: Some(secret.into()),
        handshake_timeout: Duration::from_millis(300),
        ..RpcConf::default()
    });
    let _ = client.send(&RpcAddress::new("127.0.0.1", port), "x", &Msg::Note(1));
    let (mut s, _) = listener.accept().await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    got
}

#[tokio::test]
async fn the_secret_never_crosses_the_wire() {
    let secret = "correct horse battery staple";
    let bytes = sniff_handshake(secret).await;
    assert!(!bytes.is_empty(), "the dialer said hello");
    assert!(
        !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the secret appears in the handshake"
    );
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    s.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4
}

#[tokio::test]
async fn strangers_cannot_make_the_server_reserve_memory_or_hold_slots() {
    let log = Log::default();
    let conf = RpcConf {
        handshake_timeout: Duration::from_millis(500),
        max_pending_handshakes: 8,
        ..RpcConf::default()
    };
    let srv = RpcEnv::server("127.0.0.1", 0, "127.0.0.1", conf)
        .await
        .unwrap();
    srv.setup_endpoint("echo", Echo(log.clone()));
    let addr = srv.address().unwrap().clone();
    let before = rss_kib();
    // 100 connections each announcing a 100 MB frame and sending a little of it.
    let mut socks = Vec::new();
    for _ in 0..100 {
        let mut s = tokio::net::TcpStream::connect((addr.host.as_str(), addr.port))
            .await
            .unwrap();
        let mut head = (100u32 << 20).to_be_bytes().to_vec();
        head.extend_from_slice(&[7u8; 1000]);
        let _ = s.write_all(&head).await;
        socks.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let grown = rss_kib().saturating_sub(before);
    assert!(
        grown < 32 << 10,
        "RSS grew by {grown} KiB before any handshake"
    );
    drop(socks);
    // Silent connections hold at most max_pending_handshakes slots, and only
    // until the handshake deadline; a real peer gets through afterwards.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(
            tokio::net::TcpStream::connect((addr.host.as_str(), addr.port))
                .await
                .unwrap(),
        );
    }
    let client = RpcEnv::client(RpcConf::default());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = client
            .ask::<_, String>(
                &addr,
                "echo",
                &Msg::Echo("late".into()),
                Duration::from_secs(5),
            )
            .await;
        if r.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "never admitted: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(silent);
}

/// Silent sockets from four hosts, each within its share, take every
/// handshake slot and keep it (a handshake deadline of a minute here): an
/// honest peer still gets in at once, in place of the oldest of them.
#[tokio::test]
async fn silent_sockets_from_many_hosts_cannot_lock_out_an_honest_peer() {
    let log = Log::default();
    let conf = RpcConf {
        handshake_timeout: Duration::from_secs(60),
        max_pending_handshakes: 8,
        ..RpcConf::default()
    };
    let srv = RpcEnv::server("127.0.0.1", 0, "127.0.0.1", conf)
        .await
        .unwrap();
    srv.setup_endpoint("echo", Echo(log.clone()));
    let addr = srv.address().unwrap().clone();
    let target: std::net::SocketAddr = format!("{}:{}", addr.host, addr.port).parse().unwrap();
    let mut silent = Vec::new();
    for host in 2..=5u8 {
        for _ in 0..2 {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind(std::net::SocketAddr::from(([127, 0, 0, host], 0)))
                .unwrap();
            silent.push(sock.connect(target).await.unwrap());
        }
    }
    // Closed by the server (end of stream), as the oldest is when a new one
    // arrives with every slot taken.
    async fn closed(s: &mut tokio::net::TcpStream) -> bool {
        use tokio::io::AsyncReadExt;
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_millis(5), s.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
    // More from a fifth host until one of the first is given up: every slot
    // is taken now.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut evicted = false;
    let mut extras = Vec::new();
    while !evicted {
        assert!(Instant::now() < deadline, "no slot was ever given up");
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(std::net::SocketAddr::from((
            [127, 0, 0, 6 + extras.len() as u8],
            0,
        )))
        .unwrap();
        extras.push(sock.connect(target).await.unwrap());
        for s in silent.iter_mut() {
            evicted |= closed(s).await;
        }
    }
    let client = RpcEnv::client(RpcConf::default());
    let started = Instant::now();
    let r = client
        .ask::<_, String>(
            &addr,
            "echo",
            &Msg::Echo("honest".into()),
            Duration::from_secs(10),
        )
        .await;
    assert!(r.is_ok(), "refused while strangers held the slots: {r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "admitted after {:?}",
        started.elapsed()
    );
    drop((silent, extras));
}

/// A CA and a certificate for 127.0.0.1 it signed, as PEM (cert, key, ca).
fn test_pki() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem(), ca.pem())
}

#[tokio::test]
async fn tls_connections_work_and_refuse_peers_outside_the_trust() {
    let (cert, key, ca) = test_pki();
    let tls = flint_rpc::TlsConf::from_pem(cert.as_bytes(), key.as_bytes(), ca.as_bytes()).unwrap();
    let conf = RpcConf {
        tls: Some(tls.clone()),
        secret: Some("shared".into()),
        ..RpcConf::default()
    };
    let log = Log::default();
    let srv = RpcEnv::server("127.0.0.1", 0, "127.0.0.1", conf.clone())
        .await
        .unwrap();
    srv.setup_endpoint("echo", Echo(log.clone()));
    let addr = srv.address().unwrap().clone();
    let client = RpcEnv::client(conf.clone());
    let r: String = client
        .ask(
            &addr,
            "echo",
            &Msg::Echo("over tls".into()),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert!(r.starts_with("over tls"), "{r}");
    // A plain-TCP dialer gets nowhere (and is told nothing useful in clear).
    let plain = RpcEnv::client(RpcConf {
        secret: Some("shared".into()),
        ..RpcConf::default()
    });
    assert!(
        plain
            .ask::<_, String>(
                &addr,
                "echo",
                &Msg::Echo("x".into()),
                Duration::from_secs(20)
            )
            .await
            .is_err()
    );
    // A dialer that trusts another CA refuses the server's certificate.
    let (other_cert, other_key, other_ca) = test_pki();
    let stranger = RpcEnv::client(RpcConf {
        tls: Some(
            flint_rpc::TlsConf::from_pem(
                other_cert.as_bytes(),
                other_key.as_bytes(),
                other_ca.as_bytes(),
            )
            .unwrap(),
        ),
        secret: Some("shared".into()),
        ..RpcConf::default()
    });
    let e = stranger
        .ask::<_, String>(
            &addr,
            "echo",
            &Msg::Echo("x".into()),
            Duration::from_secs(20),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("TLS handshake failed"), "{e}");
    // Bad PEM is a clear error.
    let e = flint_rpc::TlsConf::from_pem(b"junk", key.as_bytes(), ca.as_bytes())
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("no certificate") || e.to_string().contains("PEM"),
        "{e}"
    );
}

/// Records how each note arrived: over a connection it dialed or one it accepted.
struct ViaLog(Log);

impl Endpoint for ViaLog {
    type Msg = Msg;
    fn receive(&mut self, _ctx: &EndpointCtx<Msg>, from: Peer, msg: Msg, _reply: Option<Replier>) {
        if let Msg::Note(n) = msg {
            self.0
                .0
                .lock()
                .unwrap()
                .push(format!("note {n} via {:?}", from.via));
        }
    }
}

/// A peer that registered over its own connection dies, the server dials its
/// address once (refused), and a new peer comes up on the same port (the
/// kernel reuses ephemeral ports): `send_accepted` reaches the new peer over
/// the connection it opened, as a driver's messages to its executors must
/// (an executor refuses tasks arriving on a connection it did not open),
/// where `send` would dial the address again.
#[tokio::test]
async fn send_accepted_uses_the_peer_s_own_connection_after_its_port_is_reused() {
    let log = Log::default();
    let srv = server(&log).await;
    let srv_addr = srv.address().unwrap().clone();
    let first = RpcEnv::server("127.0.0.1", 0, "127.0.0.1", RpcConf::default())
        .await
        .unwrap();
    let addr = first.address().unwrap().clone();
    first.send(&srv_addr, "echo", &Msg::Note(1)).unwrap();
    wait_for(&log, &format!("note 1 from {addr}")).await;
    first.shutdown();
    wait_for(&log, &format!("disconnected {addr}")).await;
    // No live connection from it: refused at once, nothing dialed.
    let e = srv.send_accepted(&addr, "echo", &Msg::Note(2)).unwrap_err();
    assert!(e.to_string().contains("no live connection"), "{e}");
    // A plain send dials the dead address (refused): now "dialed before".
    let _ = srv.send(&addr, "echo", &Msg::Note(3));
    wait_for(&log, &format!("disconnected {addr}")).await;
    // The same port again, for a new peer.
    let mut second = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while second.is_none() {
        match RpcEnv::server("127.0.0.1", addr.port, "127.0.0.1", RpcConf::default()).await {
            Ok(env) => second = Some(env),
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "port {} not free again: {e}",
                    addr.port
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let second = second.unwrap();
    let seen = Log::default();
    second.setup_endpoint("echo", ViaLog(seen.clone()));
    second.send(&srv_addr, "echo", &Msg::Note(4)).unwrap();
    wait_for(&log, &format!("note 4 from {addr}")).await;
    srv.send_accepted(&addr, "echo", &Msg::Note(5)).unwrap();
    wait_for(&seen, "note 5 via Dialed").await;
    second.shutdown();
    srv.shutdown();
}
