//! The executor's side (Spark's CoarseGrainedExecutorBackend): the
//! application binary started by a Worker in executor mode.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use flint_core::conf::FlintConf;
use flint_core::env::{ShuffleClient, TaskEnv};
use flint_core::error::{FlintError, Result};
use flint_core::metrics::{LiveMetrics, TaskMetrics};
use flint_core::ship::Shipped;
use flint_core::shuffle::{MapOutputTracker, MapStatus, SegmentLocation};
use flint_core::storage::BlockStore;
use flint_core::task::{TaskEnd, TaskOutput};
use flint_rpc::{Endpoint, EndpointCtx, Peer, Replier, RpcAddress, RpcConf, RpcEnv, Via};
use parking_lot::Mutex;

use crate::messages::{
    DRIVER_ENDPOINT, DriverMsg, EXECUTOR_ENDPOINT, ExecutorMsg, ReduceSegments, WireBinary,
    WireFailure, WireTask, WireTaskEnd,
};

/// Longest segment chunk another executor may ask for at once.
const MAX_FETCH: u64 = 4 << 20;
/// Segment reads served at once; the rest wait (the asker's timeout bounds
/// the wait), so peers cannot make this executor hold many buffers.
const MAX_CONCURRENT_READS: usize = 8;
const ASK: Duration = Duration::from_secs(60);
/// A broadcast asked of another executor: a dead or stuck holder is given
/// up sooner than the driver's asks, and the driver serves instead.
const PEER_ASK: Duration = Duration::from_secs(20);

/// The map outputs this executor wrote, by (shuffle, map, task attempt): a
/// reader gets exactly the attempt the driver registered, even where two
/// attempts of one map ran here.
type Outputs = Arc<Mutex<HashMap<(usize, usize, u64), MapStatus>>>;
/// The cached blocks last reported to the driver, with the store's
/// generation then.
type Reported = Arc<Mutex<(u64, Vec<(usize, usize)>)>>;

/// Tells the driver which RDD partitions this executor started or stopped
/// caching since the last report (only when the store changed), so tasks on
/// cached partitions are offered to this executor first.
fn report_blocks(
    task_env: &TaskEnv,
    reported: &Reported,
    env: &RpcEnv,
    driver: &RpcAddress,
    id: &str,
) {
    let mut last = reported.lock();
    if task_env.blocks.generation() == last.0 {
        return;
    }
    let (generation, now) = task_env.blocks.cached_rdd_blocks();
    let added: Vec<(usize, usize)> = now
        .iter()
        .filter(|b| last.1.binary_search(b).is_err())
        .copied()
        .collect();
    let removed: Vec<(usize, usize)> = last
        .1
        .iter()
        .filter(|b| now.binary_search(b).is_err())
        .copied()
        .collect();
    *last = (generation, now);
    if added.is_empty() && removed.is_empty() {
        return;
    }
    let _ = env.send(
        driver,
        DRIVER_ENDPOINT,
        &DriverMsg::BlocksUpdated {
            executor_id: id.to_string(),
            added,
            removed,
        },
    );
}

/// Shuffles the driver has cleaned up: a map task of one that ends later
/// (a zombie or speculative attempt) must not leave its files behind.
type Cleaned = Arc<Mutex<std::collections::HashSet<usize>>>;
type KillFlags = Arc<Mutex<HashMap<u64, Arc<AtomicBool>>>>;
/// The live metrics of the tasks running here, for heartbeats.
type RunningMetrics = Arc<Mutex<HashMap<u64, Arc<LiveMetrics>>>>;
/// Results too large for one frame, until the driver has fetched them.
type Results = Arc<Mutex<HashMap<u64, Arc<Vec<u8>>>>>;

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
    let max_message_size: usize = match std::env::var(crate::MAX_MESSAGE_VAR) {
        Ok(v) => v.parse().ok().filter(|n| *n >= 64 << 10).ok_or_else(|| {
            FlintError::Config(format!("{} is malformed", crate::MAX_MESSAGE_VAR))
        })?,
        Err(_) => RpcConf::default().max_message_size,
    };
    let max_queued_bytes: usize = match std::env::var(crate::MAX_QUEUED_VAR) {
        Ok(v) => v
            .parse()
            .ok()
            .filter(|n| *n >= 2 * max_message_size)
            .ok_or_else(|| FlintError::Config(format!("{} is malformed", crate::MAX_QUEUED_VAR)))?,
        Err(_) => crate::default_max_queued(max_message_size),
    };
    let secret = crate::unhex(&secret_hex)
        .filter(|k| k.len() >= 16)
        .ok_or_else(|| FlintError::Config("the application secret is malformed".into()))?;
    // Only envelopes the driver signed with it run here.
    flint_core::ship::set_task_key(Some(secret));
    let rt = crate::rpc_runtime("flint-executor-rpc")
        .map_err(|e| FlintError::io("cannot start", "the executor's RPC runtime", e))?;
    let env = rt
        .block_on(RpcEnv::server(
            &host,
            0,
            &host,
            RpcConf {
                secret: Some(secret_hex),
                max_message_size,
                max_queued_bytes,
                ..RpcConf::default()
            },
        ))
        .map_err(|e| FlintError::Config(e.to_string()))?;
    // 1. The application's configuration.
    let conf: FlintConf = rt
        .block_on(env.ask(&driver, DRIVER_ENDPOINT, &DriverMsg::GetConf, ASK))
        .map_err(|e| FlintError::Config(format!("cannot reach the driver at {driver}: {e}")))?;
    // 2. The executor's environment: its local dir, named by its id, inside
    //    the application's local dir on this Worker (Spark's
    //    SPARK_EXECUTOR_DIRS), which the Worker deletes when the application
    //    ends, even if this process was killed first. An executor started by
    //    hand, with no such dir, uses its working directory.
    let cwd = std::env::current_dir().map_err(|e| FlintError::io("cannot read", ".", e))?;
    let app_local = std::env::var_os(crate::EXECUTOR_DIRS_VAR)
        .filter(|d| !d.is_empty())
        .map(std::path::PathBuf::from);
    let base = app_local.clone().unwrap_or_else(|| cwd.clone());
    let local = tempfile::Builder::new()
        .prefix(&local_dir_name(&id))
        .rand_bytes(0)
        .tempdir_in(&base)
        .map_err(|e| FlintError::io("cannot create local dir in", &base, e))?;
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
    let outputs: Outputs = Arc::default();
    let client = Arc::new(Client {
        rt: rt.handle().clone(),
        env: env.clone(),
        driver: driver.clone(),
        id: id.clone(),
        outputs: outputs.clone(),
        peers: Mutex::new(HashMap::new()),
        attached: Mutex::new(HashMap::new()),
        fetch_retry: FetchRetry::from_conf(&conf)?,
        broadcasts: Mutex::new(HashMap::new()),
        broadcast_fetches: Mutex::new(HashMap::new()),
        cleaned_broadcasts: Mutex::new(std::collections::HashSet::new()),
        task_binaries: Mutex::new(std::collections::VecDeque::new()),
        binary_fetches: Mutex::new(HashMap::new()),
        // Spark's spark.shuffle.readHostLocalDisk.
        node_local: conf
            .get_bool("flint.shuffle.readHostLocalDisk", true)?
            .then(|| app_local.map(|app| (host.clone(), app)))
            .flatten(),
    });
    let _ = task_env.shuffle_client.set(client.clone());
    // 3. Task threads.
    let kills: KillFlags = Arc::default();
    let cleaned: Cleaned = Arc::default();
    let reported: Reported = Arc::new(Mutex::new((u64::MAX, Vec::new())));
    let results: Results = Arc::default();
    let running: RunningMetrics = Arc::default();
    // Room for the status update's own fields and accumulator updates. Every
    // task thread may send its result at once, all queued on the connection
    // to the driver: together they stay within half of what it may queue.
    // Larger results stay here and the driver fetches them in parts.
    let direct_limit = max_message_size
        .saturating_sub(1 << 20)
        .max(32 << 10)
        .min(max_queued_bytes / (2 * cores.max(1)));
    let (work_tx, work_rx) = crossbeam_channel::unbounded::<(WireTask, Arc<AtomicBool>)>();
    for i in 0..cores.max(1) {
        let results = results.clone();
        let cleaned = cleaned.clone();
        let reported = reported.clone();
        let running = running.clone();
        let (rx, task_env, env, driver, outputs, kills, id, client) = (
            work_rx.clone(),
            task_env.clone(),
            env.clone(),
            driver.clone(),
            outputs.clone(),
            kills.clone(),
            id.clone(),
            client.clone(),
        );
        std::thread::Builder::new()
            .name(format!("flint-task-{i}"))
            .spawn(move || {
                while let Ok((task, killed)) = rx.recv() {
                    let started = Instant::now();
                    let task_id = task.task_id;
                    let metrics = Arc::new(LiveMetrics::default());
                    running.lock().insert(task_id, metrics.clone());
                    let end = match task.into_desc(|b| client.task_binary(b)) {
                        Ok(desc) => flint_core::task::run_task(&desc, &task_env, killed, &metrics),
                        Err(e) => TaskEnd::Failed(e),
                    };
                    running.lock().remove(&task_id);
                    let metrics = metrics.snapshot();
                    if let TaskEnd::Success(TaskOutput::Map(st), _) = &end {
                        let ids = flint_core::shuffle::map_output_ids(&st.data_file);
                        if let Some((s, map, attempt)) = ids {
                            // Checked under the outputs lock, which Cleanup
                            // also takes: either the entry is removed by it or
                            // never inserted.
                            let mut outs = outputs.lock();
                            if cleaned.lock().contains(&s) {
                                drop(outs);
                                flint_core::cleaner::clean(
                                    &task_env,
                                    flint_core::cleaner::CleanupTask::Shuffle(s),
                                );
                            } else {
                                outs.insert((s, map, attempt), st.clone());
                            }
                        }
                    }
                    if let TaskEnd::Failed(e @ FlintError::BadTask(_)) = &end {
                        tracing::warn!("refused task {}: {e}", task_id);
                    }
                    kills.lock().remove(&task_id);
                    let end = match end {
                        TaskEnd::Success(TaskOutput::Value(v), acc) if v.len() > direct_limit => {
                            let size = v.len() as u64;
                            results.lock().insert(task_id, Arc::new(v));
                            WireTaskEnd::Indirect { size, acc }
                        }
                        end => WireTaskEnd::from_end(end),
                    };
                    report_blocks(&task_env, &reported, &env, &driver, &id);
                    let update = DriverMsg::StatusUpdate {
                        executor_id: id.clone(),
                        task_id,
                        end,
                        duration_ms: started.elapsed().as_millis() as u64,
                        metrics,
                    };
                    if let Err(e) = env.send(&driver, DRIVER_ENDPOINT, &update) {
                        // Never silent: the driver would wait for this task
                        // forever.
                        tracing::error!("cannot report task {}: {e}", task_id);
                        let failed = DriverMsg::StatusUpdate {
                            executor_id: id.clone(),
                            task_id,
                            end: WireTaskEnd::Failed(WireFailure::Other(format!(
                                "executor {id} could not send the task's end to the driver: {e}"
                            ))),
                            duration_ms: started.elapsed().as_millis() as u64,
                            metrics,
                        };
                        let _ = env.send(&driver, DRIVER_ENDPOINT, &failed);
                    }
                }
            })
            .map_err(|e| FlintError::io("cannot start thread", "task thread", e))?;
    }
    // 4. The endpoint, then registration.
    let (done_tx, done_rx) = crossbeam_channel::bounded::<String>(1);
    let heartbeat_done = done_tx.clone();
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
                task_env: task_env.clone(),
                results,
                cleaned,
                client: client.clone(),
                max_reply: max_message_size.saturating_sub(4096),
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
    heartbeats(
        &conf,
        rt.handle().clone(),
        env.clone(),
        driver,
        id.clone(),
        running,
        heartbeat_done,
    )?;
    let why = done_rx
        .recv()
        .unwrap_or_else(|_| "its endpoint stopped".into());
    tracing::info!("executor {id} exits: {why}");
    env.shutdown();
    drop(local);
    Ok(())
}

/// Tells the driver every `flint.executor.heartbeatInterval` that this
/// executor lives (a hung one stops, and the driver declares it lost). Exits
/// when the driver no longer counts it as its own, or after
/// `flint.executor.heartbeat.maxFailures` (60) unanswered heartbeats in a row.
fn heartbeats(
    conf: &FlintConf,
    rt: tokio::runtime::Handle,
    env: RpcEnv,
    driver: RpcAddress,
    id: String,
    running: RunningMetrics,
    done: crossbeam_channel::Sender<String>,
) -> Result<()> {
    let interval =
        conf.get_duration("flint.executor.heartbeatInterval", Duration::from_secs(10))?;
    let max_failures: u32 = match conf.get("flint.executor.heartbeat.maxFailures") {
        Some(v) => v.parse().map_err(|_| {
            FlintError::Config(format!(
                "flint.executor.heartbeat.maxFailures={v} is not a whole number"
            ))
        })?,
        None => 60,
    };
    std::thread::Builder::new()
        .name("flint-heartbeat".into())
        .spawn(move || {
            let mut failures = 0u32;
            loop {
                // A timer, not synchronisation: the period is the setting.
                std::thread::sleep(interval);
                let tasks: Vec<(u64, TaskMetrics)> = running
                    .lock()
                    .iter()
                    .map(|(t, m)| (*t, m.snapshot()))
                    .collect();
                let msg = DriverMsg::Heartbeat {
                    executor_id: id.clone(),
                    tasks,
                };
                let r: std::result::Result<bool, flint_rpc::RpcError> = rt.block_on(env.ask(
                    &driver,
                    DRIVER_ENDPOINT,
                    &msg,
                    interval.max(Duration::from_secs(1)),
                ));
                match r {
                    Ok(true) => failures = 0,
                    Ok(false) => {
                        let _ = done.try_send(
                            "the driver no longer counts this executor as its own (declared lost)"
                                .into(),
                        );
                        return;
                    }
                    Err(e) => {
                        failures += 1;
                        tracing::warn!("heartbeat to the driver failed ({failures} in a row): {e}");
                        if failures >= max_failures {
                            let _ = done.try_send(format!(
                                "{failures} heartbeats to the driver failed in a row"
                            ));
                            return;
                        }
                    }
                }
            }
        })
        .map_err(|e| FlintError::io("cannot start thread", "heartbeat", e))?;
    Ok(())
}

/// Where an executor keeps its shuffle files and blocks, inside its
/// application's local dir on its Worker (`work/<app>/local/executor-<id>/`):
/// named by the executor's id alone, so another executor of the application on
/// the same Worker finds its map outputs from numbers (node-local reads),
/// never from a path in a message.
fn local_dir_name(executor_id: &str) -> String {
    format!("executor-{executor_id}")
}

struct ExecutorEndpoint {
    driver: RpcAddress,
    work: crossbeam_channel::Sender<(WireTask, Arc<AtomicBool>)>,
    kills: KillFlags,
    outputs: Outputs,
    done: crossbeam_channel::Sender<String>,
    reads: Arc<tokio::sync::Semaphore>,
    task_env: Arc<TaskEnv>,
    results: Results,
    cleaned: Cleaned,
    client: Arc<Client>,
    /// Largest block served in one reply.
    max_reply: usize,
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
            ExecutorMsg::LaunchTask(mut t) if from_driver => {
                if !t.slices.is_empty() {
                    let mut attached = self.client.attached.lock();
                    for (rdd, slice, bytes) in std::mem::take(&mut t.slices) {
                        attached.insert((rdd, slice), bytes.into_vec());
                    }
                }
                let flag = Arc::new(AtomicBool::new(false));
                self.kills.lock().insert(t.task_id, flag.clone());
                let _ = self.work.send((t, flag));
            }
            ExecutorMsg::KillTask { task_id } if from_driver => {
                if let Some(f) = self.kills.lock().get(&task_id) {
                    f.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            ExecutorMsg::Cleanup(task) if from_driver => {
                if let flint_core::cleaner::CleanupTask::Shuffle(id) = task {
                    let mut outs = self.outputs.lock();
                    self.cleaned.lock().insert(id);
                    outs.retain(|(s, _, _), _| *s != id);
                }
                if let flint_core::cleaner::CleanupTask::Rdd(id) = task {
                    self.client.attached.lock().retain(|(r, _), _| *r != id);
                }
                if let flint_core::cleaner::CleanupTask::Broadcast(id) = task {
                    // At once, not with the file removals below: a task
                    // launched next must not read the value.
                    self.task_env.blocks.remove_where(|b| {
                        matches!(b, flint_core::storage::BlockId::Broadcast { id: i } if *i == id)
                    });
                    let mut held = self.client.broadcasts.lock();
                    held.remove(&id);
                    self.client.cleaned_broadcasts.lock().insert(id);
                    self.client.broadcast_fetches.lock().remove(&id);
                }
                let env = self.task_env.clone();
                // File removal blocks: off the RPC threads.
                tokio::task::spawn_blocking(move || flint_core::cleaner::clean(&env, task));
            }
            ExecutorMsg::FetchResult {
                task_id,
                offset,
                len,
            } if from_driver => {
                let part = {
                    let mut results = self.results.lock();
                    match results.get(&task_id).cloned() {
                        None => Err(format!("no result of task {task_id} is kept here")),
                        Some(v) => {
                            let size = v.len() as u64;
                            match offset.checked_add(len) {
                                Some(end) if len <= crate::RESULT_CHUNK && end <= size => {
                                    if end == size {
                                        results.remove(&task_id);
                                    }
                                    Ok((v, offset as usize..end as usize))
                                }
                                _ => Err(format!(
                                    "asked for {len} bytes at {offset} of a {size}-byte result (at most {} at once)",
                                    crate::RESULT_CHUNK
                                )),
                            }
                        }
                    }
                };
                // A part is up to 16 MiB: encoded and queued off the RPC
                // thread, waiting for room (the driver may fetch many).
                if let Some(rp) = reply {
                    tokio::task::spawn_blocking(move || {
                        let r = part
                            .as_ref()
                            .map(|(v, at)| serde_bytes::Bytes::new(&v[at.clone()]));
                        rp.reply_blocking(&r);
                    });
                }
            }
            ExecutorMsg::FetchBlock { rdd, split } => {
                let Some(rp) = reply else { return };
                let (env, max) = (self.task_env.clone(), self.max_reply);
                let reads = self.reads.clone();
                tokio::spawn(async move {
                    let Ok(permit) = reads.acquire_owned().await else {
                        return;
                    };
                    // The reply waits for room in the connection's queue,
                    // without the read permit (a peer that reads slowly must
                    // not hold up reads for the others).
                    let _ = tokio::task::spawn_blocking(move || {
                        let r = unpanicked("block read", || {
                            match env
                                .blocks
                                .encoded_block(flint_core::storage::BlockId::Rdd { rdd, split })
                            {
                                None => Err("not cached here".to_string()),
                                Some(Err(e)) => Err(e.to_string()),
                                Some(Ok(b)) if b.len() > max => Err(format!(
                                    "{} bytes, over the frame limit (flint.rpc.message.maxSize)",
                                    b.len()
                                )),
                                Some(Ok(b)) => Ok(serde_bytes::ByteBuf::from(b)),
                            }
                        });
                        drop(permit);
                        rp.reply_blocking(&r);
                    })
                    .await;
                });
            }
            ExecutorMsg::FetchBroadcast { id } => {
                let Some(rp) = reply else { return };
                let held = self.client.broadcasts.lock().get(&id).cloned();
                let (reads, max) = (self.reads.clone(), self.max_reply);
                // Encoding a large value is work: off the RPC threads, and
                // as many at once as segment reads.
                tokio::spawn(async move {
                    let Ok(permit) = reads.acquire_owned().await else {
                        return;
                    };
                    let _ = tokio::task::spawn_blocking(move || match held {
                        None => rp.reply(&Err::<(), String>(format!(
                            "broadcast {id} is not held here"
                        ))),
                        Some(b) if b.len() > max => rp.reply(&Err::<(), String>(format!(
                            "{} bytes, over the frame limit (flint.rpc.message.maxSize)",
                            b.len()
                        ))),
                        Some(b) => {
                            // Encoding and waiting for room without the permit.
                            drop(permit);
                            rp.reply_blocking(&Ok::<_, String>(serde_bytes::Bytes::new(&b[..])))
                        }
                    })
                    .await;
                });
            }
            ExecutorMsg::DropResult { task_id } if from_driver => {
                self.results.lock().remove(&task_id);
            }
            ExecutorMsg::StopExecutor if from_driver => {
                let _ = self.done.try_send("the driver said stop".into());
            }
            ExecutorMsg::FetchSegment {
                shuffle_id,
                map_id,
                attempt,
                reduce,
                offset,
                len,
            } => {
                let status = self
                    .outputs
                    .lock()
                    .get(&(shuffle_id, map_id, attempt))
                    .cloned();
                let Some(rp) = reply else { return };
                let reads = self.reads.clone();
                tokio::spawn(async move {
                    let Ok(permit) = reads.acquire_owned().await else {
                        return;
                    };
                    let _ = tokio::task::spawn_blocking(move || {
                        let r = unpanicked("segment read", || {
                            read_segment(status, reduce, offset, len)
                                .map(serde_bytes::ByteBuf::from)
                        });
                        drop(permit);
                        rp.reply_blocking(&r);
                    })
                    .await;
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
    id: String,
    /// The map outputs this executor wrote.
    outputs: Outputs,
    peers: Mutex<HashMap<String, RpcAddress>>,
    /// Slices that came with their tasks, taken by the first reader.
    attached: Mutex<HashMap<(usize, usize), Vec<u8>>>,
    /// `flint.shuffle.io.maxRetries` and `flint.shuffle.io.retryWait`.
    fetch_retry: FetchRetry,
    /// Broadcast values this executor fetched, encoded, served to the
    /// others (until the driver cleans them up).
    broadcasts: Mutex<HashMap<usize, Arc<Vec<u8>>>>,
    /// One lock per broadcast being fetched, so each is fetched once.
    broadcast_fetches: Mutex<HashMap<usize, Arc<Mutex<()>>>>,
    /// Broadcasts the driver cleaned up: a fetch that ends later keeps nothing.
    cleaned_broadcasts: Mutex<std::collections::HashSet<usize>>,
    /// Stage binaries fetched from the driver, most recent first.
    task_binaries: Mutex<std::collections::VecDeque<(u64, Arc<Shipped>)>>,
    /// One lock per stage binary being fetched, so each is fetched once,
    /// holding the fetch's failure for the tasks that waited on it.
    binary_fetches: Mutex<HashMap<u64, Arc<Mutex<Option<String>>>>>,
    /// This executor's host and its application's directory on this Worker,
    /// when map outputs of executors on the same host are read from disk.
    node_local: Option<(String, std::path::PathBuf)>,
}

/// A read's answer, or its panic as an error, so the asker always hears back.
fn unpanicked<T>(
    what: &str,
    read: impl FnOnce() -> std::result::Result<T, String>,
) -> std::result::Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read))
        .unwrap_or_else(|_| Err(format!("{what} failed (it panicked)")))
}

/// The lock that lets one task thread fetch `id` while the others wait.
fn fetch_gate<K: std::hash::Hash + Eq, V: Default>(
    gates: &Mutex<HashMap<K, Arc<Mutex<V>>>>,
    id: K,
) -> Arc<Mutex<V>> {
    gates.lock().entry(id).or_default().clone()
}

/// Stage binaries an executor keeps at most, and their bytes (the newest is
/// kept whatever its size).
const KEPT_BINARIES: usize = 8;
const KEPT_BINARY_BYTES: usize = 512 << 20;

/// Spark's RetryingBlockTransferor rule: a segment fetch that fails in
/// transport (no connection, no reply in time, the peer's queue full) is
/// tried again after a wait, up to `retries` more times; an answer from the
/// peer (it has no such segment) is final at once.
const MAX_FETCH_RETRIES: u32 = 100;

#[derive(Clone, Copy, Debug)]
pub(crate) struct FetchRetry {
    retries: u32,
    wait: Duration,
}

impl FetchRetry {
    pub(crate) fn from_conf(conf: &FlintConf) -> Result<Self> {
        let retries = match conf.get("flint.shuffle.io.maxRetries") {
            Some(v) => v
                .parse()
                .ok()
                .filter(|n| *n <= MAX_FETCH_RETRIES)
                .ok_or_else(|| {
                    FlintError::Config(format!(
                        "flint.shuffle.io.maxRetries={v} must be a whole number from 0 to {MAX_FETCH_RETRIES}"
                    ))
                })?,
            None => 3,
        };
        let wait = conf.get_duration("flint.shuffle.io.retryWait", Duration::from_secs(5))?;
        Ok(FetchRetry { retries, wait })
    }

    /// Runs `attempt` until it succeeds, fails for good, or runs out of
    /// retries; returns the last error.
    fn run<T>(
        &self,
        what: &str,
        mut attempt: impl FnMut() -> std::result::Result<T, flint_rpc::RpcError>,
    ) -> std::result::Result<T, flint_rpc::RpcError> {
        let mut tried = 0;
        loop {
            match attempt() {
                // Not a timeout: the ask already waited its full time, and
                // a peer that does not answer is the driver's to declare
                // lost.
                Err(
                    e @ (flint_rpc::RpcError::Connection { .. }
                    | flint_rpc::RpcError::Backlog { .. }),
                ) if tried < self.retries => {
                    tried += 1;
                    tracing::warn!(
                        "fetching {what} failed ({e}); retry {tried} of {} in {:?}",
                        self.retries,
                        self.wait
                    );
                    // A timer, not synchronisation: the wait is the setting.
                    std::thread::sleep(self.wait);
                }
                other => return other,
            }
        }
    }
}

impl Client {
    /// Asks the driver, from a task thread.
    fn ask_driver<R: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        msg: &DriverMsg,
    ) -> std::result::Result<R, flint_rpc::RpcError> {
        self.rt
            .block_on(self.env.ask(&self.driver, DRIVER_ENDPOINT, msg, ASK))
    }

    /// Where another executor on this host keeps a map output (Spark's
    /// host-local shuffle read): in its directory beside this one, named
    /// from numbers only. The reader falls back to fetching over the network
    /// when the file is not there (another Worker on the same host).
    fn node_local_file(
        &self,
        shuffle_id: usize,
        s: &crate::messages::WireSegment,
    ) -> Option<std::path::PathBuf> {
        let (host, app_dir) = self.node_local.as_ref()?;
        let attempt = s.attempt?;
        let numeric = !s.executor_id.is_empty()
            && s.executor_id.len() <= 10
            && s.executor_id.bytes().all(|b| b.is_ascii_digit());
        if !numeric || self.peers.lock().get(&s.executor_id)?.host != *host {
            return None;
        }
        Some(
            app_dir
                .join(local_dir_name(&s.executor_id))
                .join(format!("shuffle_{shuffle_id}_{}_{attempt}.data", s.map_id)),
        )
    }

    /// A task's stage binary: the one it carries, or one fetched from the
    /// driver once and kept for the stage's other tasks here.
    fn task_binary(&self, b: WireBinary) -> Result<Arc<Shipped>> {
        let (id, size) = match b {
            WireBinary::Inline(b) => return Ok(Arc::new(b)),
            WireBinary::Fetch { id, size } => (id, size),
        };
        let cached = |held: &mut std::collections::VecDeque<(u64, Arc<Shipped>)>| {
            let at = held.iter().position(|(i, _)| *i == id)?;
            let hit = held.remove(at)?;
            held.push_front(hit.clone());
            Some(hit.1)
        };
        if let Some(b) = cached(&mut self.task_binaries.lock()) {
            return Ok(b);
        }
        // Tasks that need it at once wait for the first one's fetch, and
        // share its failure rather than each waiting out its own.
        let gate = fetch_gate(&self.binary_fetches, id);
        let mut failed = gate.lock();
        if let Some(why) = failed.as_ref() {
            return Err(FlintError::User(why.clone()));
        }
        if let Some(b) = cached(&mut self.task_binaries.lock()) {
            return Ok(b);
        }
        let got: std::result::Result<std::result::Result<Shipped, String>, _> =
            self.ask_driver(&DriverMsg::GetTaskBinary { id });
        let r = match got {
            Ok(Ok(b)) => Ok(Arc::new(b)),
            Ok(Err(why)) => Err(why),
            Err(e) => Err(format!(
                "cannot get the stage binary ({size} bytes) from the driver: {e}"
            )),
        };
        match &r {
            // Its signature is checked when the task opens it, as for any task.
            Ok(b) => {
                let mut held = self.task_binaries.lock();
                held.push_front((id, b.clone()));
                // The stages running now at most; an evicted one is fetched again.
                let mut total = 0;
                let keep = held
                    .iter()
                    .take_while(|(_, s)| {
                        total += s.payload.len();
                        total <= KEPT_BINARY_BYTES
                    })
                    .count()
                    .clamp(1, KEPT_BINARIES);
                held.truncate(keep);
            }
            Err(why) => *failed = Some(why.clone()),
        }
        // Done with: later tasks find it cached, or try again.
        let mut gates = self.binary_fetches.lock();
        if gates.get(&id).is_some_and(|g| Arc::ptr_eq(g, &gate)) {
            gates.remove(&id);
        }
        r.map_err(FlintError::User)
    }

    /// A block the driver keeps encoded for executors.
    fn encoded(&self, ask: DriverMsg, what: &str) -> Result<Vec<u8>> {
        let r: std::result::Result<serde_bytes::ByteBuf, String> = self
            .ask_driver(&ask)
            .map_err(|e| FlintError::User(format!("cannot get {what} from the driver: {e}")))?;
        r.map(serde_bytes::ByteBuf::into_vec)
            .map_err(FlintError::User)
    }
}

impl ShuffleClient for Client {
    fn slice(&self, rdd: usize, slice: usize) -> Result<Vec<u8>> {
        if let Some(bytes) = self.attached.lock().remove(&(rdd, slice)) {
            return Ok(bytes);
        }
        self.encoded(
            DriverMsg::GetSlice { rdd, slice },
            &format!("slice {slice} of parallelized collection {rdd}"),
        )
    }

    fn cached_block(&self, rdd: usize, split: usize) -> Option<Vec<u8>> {
        let at: Option<(String, RpcAddress)> = self
            .ask_driver(&DriverMsg::GetBlockLocation { rdd, split })
            .ok()?;
        let (exec, addr) = at?;
        let got: std::result::Result<std::result::Result<serde_bytes::ByteBuf, String>, _> =
            self.rt.block_on(self.env.ask(
                &addr,
                EXECUTOR_ENDPOINT,
                &ExecutorMsg::FetchBlock { rdd, split },
                ASK,
            ));
        match got {
            Ok(Ok(b)) => Some(b.into_vec()),
            Ok(Err(e)) => {
                tracing::info!(
                    "executor {exec} did not serve rdd_{rdd}_{split} ({e}); computing it"
                );
                None
            }
            Err(e) => {
                tracing::info!(
                    "cannot fetch rdd_{rdd}_{split} from executor {exec}: {e}; computing it"
                );
                None
            }
        }
    }

    /// From an executor that holds it if the driver names one, else (or if
    /// that fails) from the driver; then held here for the others.
    fn broadcast(&self, id: usize) -> Result<Arc<Vec<u8>>> {
        // One fetch per executor: tasks that need the value at once wait for
        // the first, then take its copy.
        let gate = fetch_gate(&self.broadcast_fetches, id);
        let _one = gate.lock();
        if let Some(b) = self.broadcasts.lock().get(&id) {
            return Ok(b.clone());
        }
        let from_peer = || -> std::result::Result<Vec<u8>, String> {
            let at: Option<(String, RpcAddress, [u8; 32])> = self
                .ask_driver(&DriverMsg::GetBroadcastLocation { id })
                .map_err(|e| e.to_string())?;
            let (exec, addr, want) = at.ok_or("no executor holds it yet")?;
            let got: std::result::Result<serde_bytes::ByteBuf, String> = self
                .rt
                .block_on(self.env.ask(
                    &addr,
                    EXECUTOR_ENDPOINT,
                    &ExecutorMsg::FetchBroadcast { id },
                    PEER_ASK,
                ))
                .map_err(|e| format!("executor {exec}: {e}"))?;
            let bytes = got
                .map(serde_bytes::ByteBuf::into_vec)
                .map_err(|e| format!("executor {exec}: {e}"))?;
            // A copy that is not the driver's value is not used.
            if flint_deploy::sha256(&bytes) != want {
                return Err(format!("executor {exec} sent a damaged copy"));
            }
            Ok(bytes)
        };
        let bytes = Arc::new(match from_peer() {
            Ok(b) => b,
            Err(why) => {
                if why != "no executor holds it yet" {
                    tracing::warn!("broadcast {id} from the driver instead: {why}");
                }
                self.encoded(DriverMsg::GetBroadcast { id }, &format!("broadcast {id}"))?
            }
        });
        // Checked under the broadcasts lock, which Cleanup also takes: a
        // value the driver cleaned up meanwhile is not kept (nor offered).
        let mut held = self.broadcasts.lock();
        if !self.cleaned_broadcasts.lock().contains(&id) {
            held.insert(id, bytes.clone());
            drop(held);
            let _ = self.env.send(
                &self.driver,
                DRIVER_ENDPOINT,
                &DriverMsg::BroadcastHeld {
                    executor_id: self.id.clone(),
                    id,
                },
            );
        }
        Ok(bytes)
    }

    fn segments(&self, shuffle_id: usize, reduce: usize) -> Result<Vec<SegmentLocation>> {
        let fail = |map_id, executor, reason| FlintError::FetchFailed {
            shuffle_id,
            map_id,
            executor,
            reason,
        };
        let out: ReduceSegments = self
            .ask_driver(&DriverMsg::GetSegments { shuffle_id, reduce })
            .map_err(|e| fail(0, None, format!("cannot ask the driver where it is: {e}")))?;
        self.peers.lock().extend(out.executors);
        let segments = out
            .segments
            .map_err(|f| fail(f.map_id, f.executor, f.reason))?;
        let mine = self.outputs.lock();
        segments
            .into_iter()
            .map(|s| {
                // A segment of this executor's own is read from its file;
                // the path is never taken from a message.
                let data_file = if s.executor_id == self.id {
                    let own = s.attempt.and_then(|a| mine.get(&(shuffle_id, s.map_id, a)));
                    match own {
                        Some(st) => st.data_file.clone(),
                        None => {
                            return Err(fail(
                                s.map_id,
                                Some(s.executor_id),
                                "this executor has no such map output".into(),
                            ));
                        }
                    }
                } else {
                    self.node_local_file(shuffle_id, &s).unwrap_or_default()
                };
                Ok(SegmentLocation {
                    map_id: s.map_id,
                    executor_id: s.executor_id,
                    attempt: s.attempt,
                    data_file,
                    start: s.start,
                    len: s.len,
                })
            })
            .collect()
    }

    fn fetch(
        &self,
        shuffle_id: usize,
        reduce: usize,
        seg: &SegmentLocation,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        let (executor, map_id) = (seg.executor_id.as_str(), seg.map_id);
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
        let attempt = seg
            .attempt
            .ok_or_else(|| fail("the driver did not say which attempt wrote it".into()))?;
        let msg = ExecutorMsg::FetchSegment {
            shuffle_id,
            map_id,
            attempt,
            reduce,
            offset,
            len,
        };
        let what = format!("shuffle {shuffle_id} map {map_id} from executor {executor}");
        let r: std::result::Result<serde_bytes::ByteBuf, String> = self
            .fetch_retry
            .run(&what, || {
                self.rt
                    .block_on(self.env.ask(&addr, EXECUTOR_ENDPOINT, &msg, ASK))
            })
            .map_err(|e| fail(e.to_string()))?;
        r.map(serde_bytes::ByteBuf::into_vec).map_err(fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flint_rpc::RpcError;

    fn retry(retries: u32) -> FetchRetry {
        FetchRetry {
            retries,
            wait: Duration::from_millis(1),
        }
    }

    fn lost() -> RpcError {
        RpcError::Connection {
            to: "127.0.0.1:1".into(),
            endpoint: "Executor".into(),
            reason: "connection refused".into(),
        }
    }

    #[test]
    fn transport_failures_are_retried_until_a_fetch_succeeds() {
        let mut tries = 0;
        let r = retry(3).run("seg", || {
            tries += 1;
            if tries < 3 { Err(lost()) } else { Ok(7) }
        });
        assert_eq!((r.unwrap(), tries), (7, 3));
    }

    #[test]
    fn a_timeout_is_not_retried() {
        let mut tries = 0;
        let r: std::result::Result<(), _> = retry(3).run("seg", || {
            tries += 1;
            Err(RpcError::Timeout {
                to: "x".into(),
                endpoint: "Executor".into(),
                after: Duration::from_secs(60),
            })
        });
        assert!(r.is_err());
        assert_eq!(tries, 1, "the ask already waited its full time");
    }

    #[test]
    fn retries_run_out_and_an_answer_is_final() {
        let mut tries = 0;
        let r: std::result::Result<(), _> = retry(2).run("seg", || {
            tries += 1;
            Err(lost())
        });
        assert!(matches!(r, Err(RpcError::Connection { .. })));
        assert_eq!(tries, 3, "the first try and 2 retries");
        let mut tries = 0;
        let r: std::result::Result<(), _> = retry(5).run("seg", || {
            tries += 1;
            Err(RpcError::Remote {
                to: "x".into(),
                endpoint: "Executor".into(),
                reason: "no such segment".into(),
            })
        });
        assert!(r.is_err());
        assert_eq!(tries, 1, "the peer answered: no retry");
    }

    #[test]
    fn retry_settings_are_read_and_checked() {
        let conf = FlintConf::new()
            .set("flint.shuffle.io.maxRetries", "0")
            .set("flint.shuffle.io.retryWait", "20ms");
        let r = FetchRetry::from_conf(&conf).unwrap();
        assert_eq!((r.retries, r.wait), (0, Duration::from_millis(20)));
        let d = FetchRetry::from_conf(&FlintConf::new()).unwrap();
        assert_eq!((d.retries, d.wait), (3, Duration::from_secs(5)));
        let huge = FlintConf::new().set("flint.shuffle.io.maxRetries", "4294967295");
        assert!(FetchRetry::from_conf(&huge).is_err(), "bounded");
        let bad = FlintConf::new().set("flint.shuffle.io.maxRetries", "many");
        assert!(
            FetchRetry::from_conf(&bad)
                .unwrap_err()
                .to_string()
                .contains("flint.shuffle.io.maxRetries")
        );
    }
}
