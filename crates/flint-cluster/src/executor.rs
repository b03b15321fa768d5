//! The executor's side (Spark's CoarseGrainedExecutorBackend): the
//! application binary started by a Worker in executor mode.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use flint_core::conf::FlintConf;
use flint_core::env::{ShuffleClient, TaskEnv};
use flint_core::error::{FlintError, Result};
use flint_core::shuffle::{MapOutputTracker, MapStatus};
use flint_core::storage::BlockStore;
use flint_core::task::{TaskDescription, TaskEnd, TaskOutput};
use flint_rpc::{Endpoint, EndpointCtx, Peer, Replier, RpcAddress, RpcConf, RpcEnv, Via};
use parking_lot::Mutex;

use crate::messages::{
    DRIVER_ENDPOINT, DriverMsg, EXECUTOR_ENDPOINT, ExecutorMsg, MapOutputs, WireTaskEnd,
};

/// Longest segment chunk another executor may ask for at once.
const MAX_FETCH: u64 = 4 << 20;
/// Segment reads served at once; the rest wait (the asker's timeout bounds
/// the wait), so peers cannot make this executor hold many buffers.
const MAX_CONCURRENT_READS: usize = 8;
const ASK: Duration = Duration::from_secs(60);

type Outputs = Arc<Mutex<HashMap<(usize, usize), MapStatus>>>;
type KillFlags = Arc<Mutex<HashMap<u64, Arc<AtomicBool>>>>;

/// Runs the executor until its driver goes away; never returns.
pub fn run() -> ! {
    match serve() {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("flint executor: {e}");
            std::process::exit(1);
        }
    }
}

fn var(name: &str) -> Result<String> {
    std::env::var(name).map_err(|_| FlintError::Config(format!("executor started without {name}")))
}

fn serve() -> Result<()> {
    let driver = RpcAddress::parse(&var(crate::DRIVER_URL_VAR)?)
        .map_err(|e| FlintError::Config(e.to_string()))?;
    let id = var(crate::EXECUTOR_ID_VAR)?;
    let cores: usize = var(crate::EXECUTOR_CORES_VAR)?
        .parse()
        .map_err(|_| FlintError::Config("bad executor core count".into()))?;
    let host = var(crate::EXECUTOR_HOST_VAR).unwrap_or_else(|_| "127.0.0.1".into());
    let secret_hex = var(crate::APP_SECRET_VAR)?;
    let secret = crate::unhex(&secret_hex)
        .filter(|k| k.len() >= 16)
        .ok_or_else(|| FlintError::Config("the application secret is malformed".into()))?;
    // Only envelopes the driver signed with it run here.
    flint_core::ship::set_task_key(Some(secret));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("flint-executor-rpc")
        .enable_all()
        .build()
        .map_err(|e| FlintError::io("cannot start", "the executor's RPC runtime", e))?;
    let env = rt
        .block_on(RpcEnv::server(
            &host,
            0,
            &host,
            RpcConf {
                secret: Some(secret_hex),
                ..RpcConf::default()
            },
        ))
        .map_err(|e| FlintError::Config(e.to_string()))?;
    // 1. The application's configuration.
    let conf: FlintConf = rt
        .block_on(env.ask(&driver, DRIVER_ENDPOINT, &DriverMsg::GetConf, ASK))
        .map_err(|e| FlintError::Config(format!("cannot reach the driver at {driver}: {e}")))?;
    // 2. The executor's environment: its local dir inside the directory the
    //    Worker gave it.
    let cwd = std::env::current_dir().map_err(|e| FlintError::io("cannot read", ".", e))?;
    let local = tempfile::Builder::new()
        .prefix("flint-local-")
        .tempdir_in(&cwd)
        .map_err(|e| FlintError::io("cannot create local dir in", &cwd, e))?;
    let blocks_dir = local.path().join("blocks");
    std::fs::create_dir_all(&blocks_dir)
        .map_err(|e| FlintError::io("cannot create", &blocks_dir, e))?;
    let task_env = Arc::new(TaskEnv::new(
        conf.clone(),
        id.clone(),
        local.path().to_path_buf(),
        Arc::new(MapOutputTracker::default()),
        Arc::new(BlockStore::new(
            conf.get_bytes("flint.storage.memory", 300 << 20)?,
            Some(blocks_dir),
            flint_core::env::Compression::Lz4,
        )),
        cores,
    )?);
    let client = Arc::new(Client {
        rt: rt.handle().clone(),
        env: env.clone(),
        driver: driver.clone(),
        peers: Mutex::new(HashMap::new()),
    });
    let _ = task_env.shuffle_client.set(client);
    // 3. Task threads.
    let outputs: Outputs = Arc::default();
    let kills: KillFlags = Arc::default();
    let (work_tx, work_rx) = crossbeam_channel::unbounded::<(TaskDescription, Arc<AtomicBool>)>();
    for i in 0..cores.max(1) {
        let (rx, task_env, env, driver, outputs, kills, id) = (
            work_rx.clone(),
            task_env.clone(),
            env.clone(),
            driver.clone(),
            outputs.clone(),
            kills.clone(),
            id.clone(),
        );
        std::thread::Builder::new()
            .name(format!("flint-task-{i}"))
            .spawn(move || {
                while let Ok((desc, killed)) = rx.recv() {
                    let started = Instant::now();
                    let end = flint_core::task::run_task(&desc, &task_env, killed);
                    if let TaskEnd::Success(TaskOutput::Map(st), _) = &end {
                        let shuffle = shuffle_of(&st.data_file);
                        if let Some(s) = shuffle {
                            outputs.lock().insert((s, desc.partition), st.clone());
                        }
                    }
                    if let TaskEnd::Failed(e @ FlintError::BadTask(_)) = &end {
                        tracing::warn!("refused task {}: {e}", desc.task_id);
                    }
                    kills.lock().remove(&desc.task_id);
                    let _ = env.send(
                        &driver,
                        DRIVER_ENDPOINT,
                        &DriverMsg::StatusUpdate {
                            executor_id: id.clone(),
                            task_id: desc.task_id,
                            end: WireTaskEnd::from_end(end),
                            duration_ms: started.elapsed().as_millis() as u64,
                        },
                    );
                }
            })
            .map_err(|e| FlintError::io("cannot start thread", "task thread", e))?;
    }
    // 4. The endpoint, then registration.
    let (done_tx, done_rx) = crossbeam_channel::bounded::<String>(1);
    rt.block_on(async {
        env.setup_endpoint(
            EXECUTOR_ENDPOINT,
            ExecutorEndpoint {
                driver: driver.clone(),
                work: work_tx,
                kills,
                outputs,
                done: done_tx,
                reads: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_READS)),
            },
        );
    });
    let port = env.address().map(|a| a.port).unwrap_or(0);
    let r: std::result::Result<(), String> = rt
        .block_on(env.ask(
            &driver,
            DRIVER_ENDPOINT,
            &DriverMsg::RegisterExecutor {
                executor_id: id.clone(),
                host: host.clone(),
                port,
                cores,
            },
            ASK,
        ))
        .map_err(|e| FlintError::Config(format!("cannot register with the driver: {e}")))?;
    r.map_err(|e| FlintError::Config(format!("the driver refused executor {id}: {e}")))?;
    tracing::info!("executor {id} registered with the driver at {driver}");
    let why = done_rx
        .recv()
        .unwrap_or_else(|_| "its endpoint stopped".into());
    tracing::info!("executor {id} exits: {why}");
    env.shutdown();
    drop(local);
    Ok(())
}

/// The shuffle id in a map output's file name (`shuffle_{id}_{map}_{task}.data`).
fn shuffle_of(path: &std::path::Path) -> Option<usize> {
    path.file_name()?
        .to_str()?
        .strip_prefix("shuffle_")?
        .split('_')
        .next()?
        .parse()
        .ok()
}

struct ExecutorEndpoint {
    driver: RpcAddress,
    work: crossbeam_channel::Sender<(TaskDescription, Arc<AtomicBool>)>,
    kills: KillFlags,
    outputs: Outputs,
    done: crossbeam_channel::Sender<String>,
    reads: Arc<tokio::sync::Semaphore>,
}

impl Endpoint for ExecutorEndpoint {
    type Msg = ExecutorMsg;

    fn receive(
        &mut self,
        _: &EndpointCtx<ExecutorMsg>,
        from: Peer,
        msg: ExecutorMsg,
        reply: Option<Replier>,
    ) {
        // Orders only from the driver, over the connection this executor
        // opened to it; other executors may only fetch shuffle segments.
        let from_driver = from.via == Via::Dialed && from.addr == self.driver;
        match msg {
            ExecutorMsg::LaunchTask(t) if from_driver => {
                let desc = t.into_desc();
                let flag = Arc::new(AtomicBool::new(false));
                self.kills.lock().insert(desc.task_id, flag.clone());
                let _ = self.work.send((desc, flag));
            }
            ExecutorMsg::KillTask { task_id } if from_driver => {
                if let Some(f) = self.kills.lock().get(&task_id) {
                    f.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            ExecutorMsg::StopExecutor if from_driver => {
                let _ = self.done.try_send("the driver said stop".into());
            }
            ExecutorMsg::FetchSegment {
                shuffle_id,
                map_id,
                reduce,
                offset,
                len,
            } => {
                let status = self.outputs.lock().get(&(shuffle_id, map_id)).cloned();
                let Some(rp) = reply else { return };
                let reads = self.reads.clone();
                tokio::spawn(async move {
                    let Ok(_permit) = reads.acquire_owned().await else {
                        return;
                    };
                    let r = tokio::task::spawn_blocking(move || {
                        read_segment(status, reduce, offset, len)
                    })
                    .await
                    .unwrap_or_else(|e| Err(format!("segment read failed: {e}")));
                    rp.reply(&r);
                });
            }
            other => tracing::warn!("refusing {other:?} from {from}: only the driver may send it"),
        }
    }

    fn on_disconnected(&mut self, _: &EndpointCtx<ExecutorMsg>, peer: &RpcAddress) {
        if peer == &self.driver {
            let _ = self.done.try_send("the driver went away".into());
        }
    }
}

/// Reads part of a segment this executor wrote, within its bounds.
fn read_segment(
    status: Option<MapStatus>,
    reduce: usize,
    offset: u64,
    len: u64,
) -> std::result::Result<Vec<u8>, String> {
    use std::io::{Read, Seek, SeekFrom};
    let st = status.ok_or("no such map output on this executor")?;
    let seg_len = *st
        .segment_lengths
        .get(reduce)
        .ok_or("no such reduce partition")?;
    if len > MAX_FETCH || offset.checked_add(len).is_none_or(|end| end > seg_len) {
        return Err(format!(
            "asked for {len} bytes at {offset} of a {seg_len}-byte segment (at most {MAX_FETCH} at once)"
        ));
    }
    let start: u64 = st.segment_lengths[..reduce].iter().sum::<u64>() + offset;
    let mut f = std::fs::File::open(&st.data_file).map_err(|e| e.to_string())?;
    f.seek(SeekFrom::Start(start)).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf).map_err(|e| e.to_string())?;
    Ok(buf)
}

/// Map outputs from the driver and segments from other executors, asked from
/// task threads (plain threads, so blocking on the runtime is fine).
struct Client {
    rt: tokio::runtime::Handle,
    env: RpcEnv,
    driver: RpcAddress,
    peers: Mutex<HashMap<String, RpcAddress>>,
}

impl Client {
    /// A block the driver keeps encoded for executors.
    fn encoded(&self, ask: DriverMsg, what: &str) -> Result<Vec<u8>> {
        let r: std::result::Result<Vec<u8>, String> = self
            .rt
            .block_on(self.env.ask(&self.driver, DRIVER_ENDPOINT, &ask, ASK))
            .map_err(|e| FlintError::User(format!("cannot get {what} from the driver: {e}")))?;
        r.map_err(FlintError::User)
    }
}

impl ShuffleClient for Client {
    fn slice(&self, rdd: usize, slice: usize) -> Result<Vec<u8>> {
        self.encoded(
            DriverMsg::GetSlice { rdd, slice },
            &format!("slice {slice} of parallelized collection {rdd}"),
        )
    }

    fn broadcast(&self, id: usize) -> Result<Vec<u8>> {
        self.encoded(DriverMsg::GetBroadcast { id }, &format!("broadcast {id}"))
    }

    fn statuses(&self, shuffle_id: usize) -> Result<Vec<Option<MapStatus>>> {
        let out: MapOutputs = self
            .rt
            .block_on(self.env.ask(
                &self.driver,
                DRIVER_ENDPOINT,
                &DriverMsg::GetMapOutputs { shuffle_id },
                ASK,
            ))
            .map_err(|e| FlintError::FetchFailed {
                shuffle_id,
                map_id: 0,
                executor: None,
                reason: format!("cannot get map outputs from the driver: {e}"),
            })?;
        self.peers.lock().extend(out.executors);
        out.statuses.ok_or_else(|| FlintError::FetchFailed {
            shuffle_id,
            map_id: 0,
            executor: None,
            reason: "the driver has no map outputs registered for this shuffle".into(),
        })
    }

    fn fetch(
        &self,
        executor: &str,
        shuffle_id: usize,
        map_id: usize,
        reduce: usize,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        let fail = |reason: String| FlintError::FetchFailed {
            shuffle_id,
            map_id,
            executor: Some(executor.to_string()),
            reason,
        };
        let addr = self
            .peers
            .lock()
            .get(executor)
            .cloned()
            .ok_or_else(|| fail(format!("executor {executor} is not known (lost?)")))?;
        let r: std::result::Result<Vec<u8>, String> = self
            .rt
            .block_on(self.env.ask(
                &addr,
                EXECUTOR_ENDPOINT,
                &ExecutorMsg::FetchSegment {
                    shuffle_id,
                    map_id,
                    reduce,
                    offset,
                    len,
                },
                ASK,
            ))
            .map_err(|e| fail(e.to_string()))?;
        r.map_err(fail)
    }
}
