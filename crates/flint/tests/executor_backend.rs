//! The executor backend against a driver written here: this test binary is
//! started as a real executor process (`flint::init()` in executor mode),
//! dials the fake driver with the application's secret, fetches its
//! configuration and registers. The fake driver then sends it tasks: a signed
//! envelope runs and its result matches local mode; a forged one, an
//! unsigned one, and one from another build are refused with their reasons,
//! and the executor keeps serving. A large stage binary its tasks only name
//! is fetched from the driver once, checked like one that travels inside its
//! task, and a driver that no longer has it fails the task with its reason.
//! Broadcast values come from the driver when the executor the driver names
//! cannot serve them or serves a damaged copy.
//! Its own `main` because the executor is this very executable.

use std::time::Duration;

use flint::prelude::*;
use flint::rdd::CollectFn;
use flint_cluster::messages::{
    DRIVER_ENDPOINT, DriverMsg, EXECUTOR_ENDPOINT, ExecutorMsg, WireBinary, WireFailure, WireTask,
    WireTaskEnd,
};
use flint_rpc::{Endpoint, EndpointCtx, Peer, Replier, RpcAddress, RpcConf, RpcEnv};

/// What the executor told the driver.
enum Seen {
    Registered(RpcAddress),
    Ended(u64, WireTaskEnd),
}

/// What the fake driver knows of broadcasts: each id's encoded value and
/// which executor to name for it; how often it served one itself.
#[derive(Default)]
struct Broadcasts {
    values: std::collections::HashMap<usize, Vec<u8>>,
    named: std::collections::HashMap<usize, RpcAddress>,
    served: usize,
    held: Vec<usize>,
    /// Stage binaries executors fetch by id, and how many were fetched.
    binaries: std::collections::HashMap<u64, flint::ship::Shipped>,
    binaries_served: usize,
}

type Shared = std::sync::Arc<parking_lot::Mutex<Broadcasts>>;

struct FakeDriver(crossbeam_channel::Sender<Seen>, Shared);

/// An "executor" that serves every broadcast damaged.
struct BadPeer;

impl Endpoint for BadPeer {
    type Msg = ExecutorMsg;

    fn receive(
        &mut self,
        _: &EndpointCtx<ExecutorMsg>,
        _: Peer,
        msg: ExecutorMsg,
        reply: Option<Replier>,
    ) {
        if let (ExecutorMsg::FetchBroadcast { .. }, Some(r)) = (msg, reply) {
            r.reply(&Ok::<_, String>(serde_bytes::ByteBuf::from(vec![1u8; 16])));
        }
    }
}

impl Endpoint for FakeDriver {
    type Msg = DriverMsg;

    fn receive(
        &mut self,
        _: &EndpointCtx<DriverMsg>,
        from: Peer,
        msg: DriverMsg,
        reply: Option<Replier>,
    ) {
        match msg {
            DriverMsg::GetConf => {
                if let Some(r) = reply {
                    r.reply(&FlintConf::new());
                }
            }
            DriverMsg::RegisterExecutor { .. } => {
                if let Some(r) = reply {
                    r.reply(&Ok::<(), String>(()));
                }
                let _ = self.0.send(Seen::Registered(from.addr));
            }
            DriverMsg::Heartbeat { .. } => {
                if let Some(r) = reply {
                    r.reply(&true);
                }
            }
            DriverMsg::StatusUpdate { task_id, end, .. } => {
                let _ = self.0.send(Seen::Ended(task_id, end));
            }
            DriverMsg::GetBroadcastLocation { id } => {
                let b = self.1.lock();
                let at = b.named.get(&id).map(|a| {
                    let sum = flint_deploy::sha256(&b.values[&id]);
                    ("9".to_string(), a.clone(), sum)
                });
                if let Some(r) = reply {
                    r.reply(&at);
                }
            }
            DriverMsg::GetBroadcast { id } => {
                let mut b = self.1.lock();
                b.served += 1;
                let v = b
                    .values
                    .get(&id)
                    .cloned()
                    .ok_or("no such broadcast".to_string());
                if let Some(r) = reply {
                    r.reply(&v.map(serde_bytes::ByteBuf::from));
                }
            }
            DriverMsg::BroadcastHeld { id, .. } => self.1.lock().held.push(id),
            DriverMsg::GetTaskBinary { id } => {
                let mut b = self.1.lock();
                b.binaries_served += 1;
                let v = b
                    .binaries
                    .get(&id)
                    .cloned()
                    .ok_or(format!("no stage binary {id} here"));
                if let Some(r) = reply {
                    r.reply(&v);
                }
            }
            _ => {}
        }
    }
}

/// Kills the executor by PID however the test ends.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    flint::init();
    // Speak just enough of libtest's listing protocol for cargo-nextest.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("an_executor_runs_only_its_driver_s_signed_tasks: test");
        }
        return;
    }
    let key = flint::ship::generate_task_key().unwrap();
    let secret: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let env = rt
        .block_on(RpcEnv::server(
            "127.0.0.1",
            0,
            "127.0.0.1",
            RpcConf {
                secret: Some(secret.clone()),
                ..RpcConf::default()
            },
        ))
        .unwrap();
    let shared = Shared::default();
    rt.block_on(async {
        env.setup_endpoint(DRIVER_ENDPOINT, FakeDriver(tx, shared.clone()));
        env.setup_endpoint(EXECUTOR_ENDPOINT, BadPeer);
    });
    let dir = tempfile::tempdir().unwrap();
    let _executor = Reaped(
        std::process::Command::new(std::env::current_exe().unwrap())
            .env(flint::executor::ROLE_VAR, "executor")
            .env(
                flint_cluster::DRIVER_URL_VAR,
                env.address().unwrap().to_string(),
            )
            .env(flint_cluster::EXECUTOR_ID_VAR, "1")
            .env(flint_cluster::EXECUTOR_CORES_VAR, "1")
            .env(flint_cluster::EXECUTOR_HOST_VAR, "127.0.0.1")
            .env(flint_cluster::APP_SECRET_VAR, &secret)
            .current_dir(dir.path())
            .spawn()
            .unwrap(),
    );
    let wait = |what: &str| {
        rx.recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no {what} from the executor"))
    };
    let Seen::Registered(executor) = wait("registration") else {
        panic!("expected the executor to register first");
    };

    let sc = FlintContext::new(
        FlintConf::new()
            .master("local[1]")
            .set("flint.ui.showConsoleProgress", "false"),
    )
    .unwrap();
    let k = 7i64;
    let names = vec!["a".to_string(), "bb".to_string(), "ccc".to_string()];
    let rdd = sc
        .range(0, 1000, 3, 4)
        .unwrap()
        .map(Fn!(
            move |x: i64| x * k + names[(x % 3) as usize].len() as i64
        ))
        .filter(Fn!(|x: &i64| x % 2 == 0));
    let expected = rdd.collect().unwrap();
    let binary = rdd.stage_binary(CollectFn).unwrap();
    let mut signed = (*binary).clone();
    signed.sign(&key);
    let mut forged = signed.clone();
    forged.offset += 64;
    let mut other_build = (*binary).clone();
    other_build.build_id ^= 0xdead_beef;
    other_build.sign(&key);

    let last_id = std::cell::Cell::new(0u64);
    let run_as = |binary: WireBinary, partition: usize| -> WireTaskEnd {
        let next_id = last_id.get() + 1;
        last_id.set(next_id);
        let task = WireTask {
            task_id: next_id,
            stage_id: 0,
            stage_attempt: 0,
            partition,
            index: partition,
            attempt: 0,
            binary,
            slices: Vec::new(),
        };
        env.send(&executor, EXECUTOR_ENDPOINT, &ExecutorMsg::LaunchTask(task))
            .unwrap();
        match wait("task end") {
            Seen::Ended(id, end) if id == next_id => end,
            _ => panic!("expected the end of task {next_id}"),
        }
    };
    let run = |shipped: &flint::ship::Shipped, partition: usize| {
        run_as(WireBinary::Inline(shipped.clone()), partition)
    };

    // Refusals first: the executor must keep serving after each.
    let refused = |end: WireTaskEnd| match end {
        WireTaskEnd::Failed(f) => f,
        _ => panic!("the task ran"),
    };
    let f = refused(run(&forged, 0));
    assert!(
        matches!(&f, WireFailure::BadTask(m) if m.contains("wrong signature")),
        "{f:?}"
    );
    let f = refused(run(&binary, 0));
    assert!(
        matches!(&f, WireFailure::BadTask(m) if m.contains("not signed")),
        "{f:?}"
    );
    let f = refused(run(&other_build, 0));
    assert!(matches!(&f, WireFailure::BuildMismatch { .. }), "{f:?}");
    println!("executor_backend: forged, unsigned and other-build envelopes refused");

    let mut remote: Vec<i64> = Vec::new();
    for p in 0..rdd.num_partitions() {
        match run(&signed, p) {
            WireTaskEnd::Value(bytes, _) => {
                let part: Vec<i64> = flint::codec::decode("result", &bytes).unwrap();
                remote.extend(part);
            }
            _ => panic!("partition {p} did not run"),
        }
    }
    assert_eq!(
        remote, expected,
        "the executor computed what local mode computes"
    );
    println!(
        "executor_backend: {} records computed in the executor process match",
        remote.len()
    );

    // The same stage, its binary named rather than carried: fetched once.
    {
        let mut b = shared.lock();
        b.binaries.insert(1, signed.clone());
        b.binaries.insert(2, forged.clone());
    }
    let fetch = |id| WireBinary::Fetch { id, size: 1 << 20 };
    let mut remote: Vec<i64> = Vec::new();
    for p in 0..rdd.num_partitions() {
        match run_as(fetch(1), p) {
            WireTaskEnd::Value(bytes, _) => {
                remote.extend(flint::codec::decode::<Vec<i64>>("result", &bytes).unwrap());
            }
            other => panic!("partition {p} with a fetched binary did not run: {other:?}"),
        }
    }
    assert_eq!(remote, expected, "a fetched binary computes the same");
    assert_eq!(
        shared.lock().binaries_served,
        1,
        "the binary was fetched once for all {} tasks",
        rdd.num_partitions()
    );
    let f = refused(run_as(fetch(2), 0));
    assert!(
        matches!(&f, WireFailure::BadTask(m) if m.contains("wrong signature")),
        "a fetched binary is checked too: {f:?}"
    );
    let f = refused(run_as(fetch(99), 0));
    assert!(
        format!("{f:?}").contains("no stage binary 99 here"),
        "the driver's reason reaches the task's end: {f:?}"
    );
    println!(
        "executor_backend: named stage binaries are fetched once, checked, and missing ones fail"
    );

    // Broadcasts: one whose named holder is unreachable, one whose holder
    // serves a damaged copy; both come from the driver instead, once each.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let b1 = sc.broadcast(vec![3u64; 1000]);
    let b2 = sc.broadcast("fourteen chars".to_string());
    {
        let mut b = shared.lock();
        b.values
            .insert(b1.id(), flint::codec::encode("b1", b1.value()).unwrap());
        b.values
            .insert(b2.id(), flint::codec::encode("b2", b2.value()).unwrap());
        b.named
            .insert(b1.id(), RpcAddress::new("127.0.0.1", closed));
        b.named.insert(b2.id(), env.address().unwrap().clone());
    }
    let uses = sc.range(0, 10, 1, 1).unwrap().map(Fn!(move |x: i64| x
        + b1.value().len() as i64
        + b2.value().len() as i64));
    let expected = uses.collect().unwrap();
    let mut shipped = (*uses.stage_binary(CollectFn).unwrap()).clone();
    shipped.sign(&key);
    match run(&shipped, 0) {
        WireTaskEnd::Value(bytes, _) => {
            let got: Vec<i64> = flint::codec::decode("result", &bytes).unwrap();
            assert_eq!(got, expected);
        }
        other => panic!("the task using broadcasts failed: {other:?}"),
    }
    let b = shared.lock();
    assert_eq!(
        b.served, 2,
        "both came from the driver after the holders failed"
    );
    let mut held = b.held.clone();
    held.sort();
    assert_eq!(held.len(), 2, "the executor now serves both: {held:?}");
    println!("executor_backend: broadcasts fall back to the driver past a dead or damaged holder");
    drop(b);
    sc.stop();
    env.shutdown();
}
