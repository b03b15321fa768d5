//! The driver's side: the scheduler backend for `flint://` and
//! `local-cluster[N,C,M]` masters.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use flint_core::conf::FlintConf;
use flint_core::env::TaskEnv;
use flint_core::error::{FlintError, Result};
use flint_core::exit_cleanup::ExitCleanedDir;
use flint_core::metrics::TaskMetrics;
use flint_core::scheduler::TaskScheduler;
use flint_core::scheduler::backend::{ClusterStart, SchedulerBackend, WorkerOffer};
use flint_deploy::LocalCluster;
use flint_deploy::messages::{
    APP_CLIENT_ENDPOINT, AppClientMsg, ApplicationDescription, Command, ExecutorState,
    MASTER_ENDPOINT, MasterMsg,
};
use flint_rpc::{Endpoint, EndpointCtx, LocalRef, Peer, Replier, RpcAddress, RpcConf, RpcEnv, Via};
use parking_lot::Mutex;

use crate::messages::{
    DRIVER_ENDPOINT, DriverMsg, EXECUTOR_ENDPOINT, ExecutorMsg, ReduceSegments, WireBinary,
    WireFetchFailure, WireSegment, WireTask,
};

struct Exec {
    addr: RpcAddress,
    cores: usize,
    free: usize,
    last_heartbeat: Instant,
}

/// An indirect result waiting for room under maxResultSize.
struct PendingFetch {
    executor_id: String,
    addr: RpcAddress,
    task_id: u64,
    size: u64,
    acc: Vec<(usize, Vec<u8>)>,
    duration_ms: u64,
    metrics: TaskMetrics,
}

/// Asks the Master to end executors of this application.
type KillExecutors = Arc<dyn Fn(Vec<u32>) + Send + Sync>;

/// Which executors (id, host) cache each RDD partition: Spark's
/// BlockManagerMaster, as far as locality needs it.
type BlockMap = Arc<parking_lot::RwLock<HashMap<(usize, usize), Vec<(String, String)>>>>;

/// The driver endpoint (Spark's DriverEndpoint): executors' registrations,
/// free cores and task ends.
struct DriverEndpoint {
    scheduler: Arc<TaskScheduler>,
    env: Arc<TaskEnv>,
    conf: FlintConf,
    executors: HashMap<String, Exec>,
    running: HashMap<u64, String>,
    total_cores: Arc<AtomicUsize>,
    registered: Arc<AtomicUsize>,
    cpus: usize,
    /// Largest slice sent in one reply (the frame limit, less the envelope).
    max_reply: usize,
    /// Bytes of stage binaries and slices shipped inside tasks to one
    /// executor in one offer round at most (the rest are fetched): a round
    /// sends a task to every free core at once, all queued before the
    /// connection's writer runs, and must stay well within
    /// `flint.rpc.maxQueuedBytes`.
    round_budget: usize,
    /// `flint.rpc.maxQueuedBytes` (the executors' too).
    max_queued: usize,
    /// An executor silent this long is lost (`flint.network.timeout`).
    timeout: Duration,
    /// How late each heartbeat expiry check runs (see `LateCheck`).
    expiry_check: flint_deploy::LateCheck,
    /// `flint.driver.maxResultSize` (0: no limit).
    max_result_size: u64,
    /// The application's key: every task sent is signed with it.
    task_key: Vec<u8>,
    /// Stage binaries sent, with their ids and signatures.
    binaries: TaskBinaries,
    /// Bytes of indirect results being fetched, and those waiting to be.
    in_flight: u64,
    waiting: std::collections::VecDeque<PendingFetch>,
    /// Slices already shipped to each executor (it keeps them).
    shipped: std::collections::HashSet<(String, usize, usize)>,
    blocks: BlockMap,
    /// The executors that hold each broadcast and serve it to the others,
    /// and whose turn it is to be named.
    broadcast_holders: HashMap<usize, Vec<String>>,
    broadcast_turn: usize,
    broadcast_sums: HashMap<usize, [u8; 32]>,
    /// When a task was last sent to an executor.
    last_launch: Option<Instant>,
    /// `flint.starvation.timeout` (15 s).
    starvation: Duration,
    kill_executors: KillExecutors,
    /// Executors forgotten as the context stops whose connections are still
    /// open, and who waits for them all to close (the context's stop).
    stopping: std::collections::HashSet<RpcAddress>,
    /// The application is stopping: executors that register now (launched
    /// before the Master was told to launch no more) are refused, and exit.
    closing: bool,
    stopped: Option<Replier>,
}

/// How long a context's stop waits for its executors to exit, and for the
/// Master to take note that the application finished.
const STOP_WAIT: Duration = Duration::from_secs(3);

/// Cached partitions the driver tracks for locality at most.
const MAX_CACHED_BLOCKS: usize = 1 << 20;

/// Replies up to this size are encoded on the RPC thread (a thread hand-off
/// costs more than copying them).
const INLINE_REPLY: usize = 64 << 10;

/// Bytes of parallelized slices shipped inside one task at most.
const ATTACH_LIMIT: usize = 1 << 20;

/// Stage binaries up to this size travel inside every task; larger ones are
/// fetched once per executor (`WireBinary`).
const INLINE_BINARY: usize = 64 << 10;

/// The stage binaries the driver has sent, by id: held weakly, so a binary
/// lives as long as its stage's task set and an executor asking for one of
/// an ended stage gets an error rather than keeping it alive.
#[derive(Default)]
struct TaskBinaries {
    next: u64,
    live: Vec<(u64, std::sync::Weak<flint_core::ship::Shipped>, [u8; 32])>,
}

impl TaskBinaries {
    /// The id and signature of `b`, assigned and computed the first time.
    fn entry(&mut self, b: &Arc<flint_core::ship::Shipped>, key: &[u8]) -> (u64, [u8; 32]) {
        // A Weak keeps its allocation, so a live entry's address is only ever
        // that binary's.
        if let Some((id, _, mac)) = self
            .live
            .iter()
            .find(|(_, w, _)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(b)))
        {
            return (*id, *mac);
        }
        self.live.retain(|(_, w, _)| w.strong_count() > 0);
        self.next += 1;
        let mac = b.signature(key);
        self.live.push((self.next, Arc::downgrade(b), mac));
        (self.next, mac)
    }

    /// Binary `id` and its signature, while its stage runs.
    fn get(&self, id: u64) -> Option<(Arc<flint_core::ship::Shipped>, [u8; 32])> {
        let (_, w, mac) = self.live.iter().find(|(i, _, _)| *i == id)?;
        Some((w.upgrade()?, *mac))
    }
}

/// More cores than any machine has: a claim above it is refused.
const MAX_EXECUTOR_CORES: usize = 1 << 16;

impl DriverEndpoint {
    /// Tells the context's stop that every executor told to stop is gone.
    fn all_stopped(&mut self) {
        if self.stopping.is_empty()
            && let Some(r) = self.stopped.take()
        {
            r.reply(&());
        }
    }

    fn make_offers(&mut self, ctx: &EndpointCtx<DriverMsg>) {
        let offers: Vec<WorkerOffer> = self
            .executors
            .iter()
            .filter(|(_, e)| e.free >= self.cpus)
            .map(|(id, e)| WorkerOffer {
                executor_id: id.clone(),
                host: e.addr.host.clone(),
                cores: e.free,
            })
            .collect();
        if offers.is_empty() {
            return;
        }
        // Bytes of binaries and slices each executor may still be sent inside
        // tasks this round.
        let mut round: HashMap<String, usize> = HashMap::new();
        for (exec_id, desc) in self.scheduler.resource_offers(&offers) {
            let Some(e) = self.executors.get_mut(&exec_id) else {
                continue;
            };
            e.free = e.free.saturating_sub(self.cpus);
            self.running.insert(desc.task_id, exec_id.clone());
            self.last_launch = Some(Instant::now());
            // One signature per stage binary (tasks of a stage share it).
            let (bin_id, mac) = self.binaries.entry(&desc.binary, &self.task_key);
            let size = desc.binary.payload.len();
            // What this round may still queue for the executor: small
            // binaries and slices travel inside tasks while it lasts.
            let budget = round.entry(exec_id.clone()).or_insert(self.round_budget);
            // One over the frame limit goes inline too, to fail below with
            // Spark's advice rather than at the executor's fetch.
            let inline = (size <= INLINE_BINARY && size <= *budget) || size > self.max_reply;
            let binary = if inline {
                *budget = budget.saturating_sub(size);
                let mut b = (*desc.binary).clone();
                b.mac = Some(mac);
                WireBinary::Inline(b)
            } else {
                WireBinary::Fetch {
                    id: bin_id,
                    size: size as u64,
                }
            };
            let mut task = WireTask::from_desc(&desc, binary);
            // Small slices travel with the task (no round trip to fetch
            // them), once per executor, leaving room for the task itself.
            let mut room = ATTACH_LIMIT
                .min((self.max_reply / 2).saturating_sub(if inline { size } else { 0 }))
                .min(*budget);
            for id in &desc.driver_blocks {
                if let flint_core::storage::BlockId::ParallelSlice { rdd, slice } = *id
                    && !self.shipped.contains(&(exec_id.clone(), rdd, slice))
                    && let Some(b) = self.env.blocks.get::<flint_core::env::EncodedBlock>(*id)
                    && b.0.len() <= room
                {
                    room -= b.0.len();
                    *budget -= b.0.len();
                    self.shipped.insert((exec_id.clone(), rdd, slice));
                    task.slices
                        .push((rdd, slice, serde_bytes::ByteBuf::from(b.0.clone())));
                }
            }
            if let Err(err) =
                ctx.env
                    .send_accepted(&e.addr, EXECUTOR_ENDPOINT, &ExecutorMsg::LaunchTask(task))
            {
                if matches!(
                    err,
                    flint_rpc::RpcError::Connection { .. } | flint_rpc::RpcError::Backlog { .. }
                ) {
                    // Its connection closed (or is closing: the executor
                    // stopped reading): the task stays counted as running
                    // there until the disconnect, now on its way, declares
                    // the executor lost and queues it again, once.
                    tracing::debug!(
                        "task {} not sent to executor {exec_id}: {err}",
                        desc.task_id
                    );
                    continue;
                }
                // Too large for a frame, most likely: the task fails with a
                // message that says what to do.
                e.free += self.cpus;
                self.running.remove(&desc.task_id);
                let msg = match err {
                    flint_rpc::RpcError::TooLarge { size, max } => format!(
                        "Serialized task {}:{} was {size} bytes, which exceeds max allowed: flint.rpc.message.maxSize ({max} bytes). Consider increasing flint.rpc.message.maxSize or using broadcast variables for large values.",
                        desc.task_id, desc.index
                    ),
                    other => format!("cannot send the task to executor {exec_id}: {other}"),
                };
                self.scheduler.status_update(
                    desc.task_id,
                    flint_core::task::TaskEnd::Failed(FlintError::User(msg)),
                    Duration::ZERO,
                );
            }
        }
    }

    /// The SHA-256 of a broadcast's encoding, computed once (None once the
    /// driver no longer has it).
    fn broadcast_sum(&mut self, id: usize) -> Option<[u8; 32]> {
        if let Some(s) = self.broadcast_sums.get(&id) {
            return Some(*s);
        }
        let block = flint_core::storage::BlockId::Broadcast { id };
        let b = self
            .env
            .blocks
            .get::<flint_core::env::EncodedBlock>(block)?;
        let sum = flint_deploy::sha256(&b.0);
        self.broadcast_sums.insert(id, sum);
        Some(sum)
    }

    /// Answers with a block the driver keeps encoded for executors, within
    /// the frame limit. A large one is encoded into the reply off the RPC
    /// thread, which everything else of the driver's (and of an in-process
    /// Master's and Workers') network traffic shares.
    fn reply_encoded(
        &self,
        rp: Replier,
        id: flint_core::storage::BlockId,
        what: &str,
        advice: &str,
    ) {
        match self.env.blocks.get::<flint_core::env::EncodedBlock>(id) {
            None => rp.reply(&Err::<(), String>(format!(
                "{what} is not on the driver (destroyed, cleaned up, or not encodable)"
            ))),
            Some(b) if b.0.len() > self.max_reply => rp.reply(&Err::<(), String>(format!(
                "{what} is {} bytes, over flint.rpc.message.maxSize ({} bytes): {advice}",
                b.0.len(),
                self.max_reply
            ))),
            Some(b) => {
                if b.0.len() > INLINE_REPLY {
                    // Many tasks may fetch at once: wait for room in the
                    // connection's queue rather than overflow it.
                    tokio::task::spawn_blocking(move || {
                        rp.reply_blocking(&Ok::<_, String>(serde_bytes::Bytes::new(&b.0)))
                    });
                } else {
                    rp.reply(&Ok::<_, String>(serde_bytes::Bytes::new(&b.0)));
                }
            }
        }
    }

    /// A result too large for one frame: fetched from its executor in parts
    /// off the endpoint's thread, then reported as the task's end.
    fn fetch_result(&mut self, ctx: &EndpointCtx<DriverMsg>, p: PendingFetch) {
        if self.max_result_size > 0 && p.size > self.max_result_size {
            let _ = ctx.env.send_accepted(
                &p.addr,
                EXECUTOR_ENDPOINT,
                &ExecutorMsg::DropResult { task_id: p.task_id },
            );
            self.scheduler.status_update_with_metrics(
                p.task_id,
                flint_core::task::TaskEnd::Failed(FlintError::ResultTooLarge(format!(
                    "Total size of serialized results of task {} ({} bytes) is bigger than flint.driver.maxResultSize ({} bytes); collect less (reduce, take, or write the output to files) or raise the limit",
                    p.task_id, p.size, self.max_result_size
                ))),
                Duration::from_millis(p.duration_ms),
                p.metrics,
            );
            return;
        }
        // Results being fetched stay within maxResultSize together; the rest
        // wait their turn (the driver's memory stays bounded).
        if self.max_result_size > 0
            && self.in_flight > 0
            && self.in_flight + p.size > self.max_result_size
        {
            crate::metrics::RESULTS_DEFERRED.fetch_add(1, Ordering::Relaxed);
            self.waiting.push_back(p);
            return;
        }
        let PendingFetch {
            executor_id,
            addr,
            task_id,
            size,
            acc,
            duration_ms,
            metrics,
        } = p;
        self.in_flight += size;
        let (env, me) = (ctx.env.clone(), ctx.this().clone());
        // Parts fit in a frame with room for the reply's envelope, and the
        // parts of every core's result at once fit in half of what the
        // executor may queue for the driver.
        let cores = self.executors.get(&executor_id).map_or(1, |e| e.cores);
        let chunk = crate::RESULT_CHUNK
            .min(self.max_reply as u64 / 2)
            .min((self.max_queued / (2 * cores.max(1))) as u64)
            .max(64 << 10);
        tokio::spawn(async move {
            let mut bytes = Vec::with_capacity(size as usize);
            let mut result = Ok(());
            while (bytes.len() as u64) < size {
                let offset = bytes.len() as u64;
                let len = (size - offset).min(chunk);
                let part: std::result::Result<
                    std::result::Result<serde_bytes::ByteBuf, String>,
                    _,
                > = env
                    .ask_accepted(
                        &addr,
                        EXECUTOR_ENDPOINT,
                        &ExecutorMsg::FetchResult {
                            task_id,
                            offset,
                            len,
                        },
                        Duration::from_secs(120),
                    )
                    .await;
                match part {
                    Ok(Ok(p)) if p.len() as u64 == len => bytes.extend_from_slice(&p),
                    Ok(Ok(p)) => {
                        result = Err(format!("sent {} bytes of the {len} asked for", p.len()));
                        break;
                    }
                    Ok(Err(e)) => {
                        result = Err(e);
                        break;
                    }
                    Err(e) => {
                        result = Err(e.to_string());
                        break;
                    }
                }
            }
            if result.is_err() {
                // It may still hold the rest: let it go.
                let _ = env.send_accepted(
                    &addr,
                    EXECUTOR_ENDPOINT,
                    &ExecutorMsg::DropResult { task_id },
                );
            }
            me.send(DriverMsg::ResultFetched {
                executor_id,
                task_id,
                size,
                result: result.map(|()| bytes),
                acc,
                duration_ms,
                metrics,
            });
        });
    }

    /// `caused_by_app`: see `TaskScheduler::executor_lost`.
    fn lost(
        &mut self,
        executor_id: &str,
        reason: &str,
        caused_by_app: bool,
        ctx: &EndpointCtx<DriverMsg>,
    ) {
        let Some(e) = self.executors.remove(executor_id) else {
            return;
        };
        // If it still runs (hung, or the Master lost sight of it), it must
        // not linger: tell it, and have its Worker end it (a hung process
        // does not read).
        let _ = ctx
            .env
            .send_accepted(&e.addr, EXECUTOR_ENDPOINT, &ExecutorMsg::StopExecutor);
        if let Ok(n) = executor_id.parse::<u32>() {
            (self.kill_executors)(vec![n]);
        }
        self.total_cores.fetch_sub(e.cores, Ordering::SeqCst);
        self.running.retain(|_, ex| ex != executor_id);
        self.shipped.retain(|(e, _, _)| e != executor_id);
        for v in self.broadcast_holders.values_mut() {
            v.retain(|e| e != executor_id);
        }
        // Its cached blocks are gone with it.
        self.blocks.write().retain(|_, v| {
            v.retain(|(id, _)| id != executor_id);
            !v.is_empty()
        });
        tracing::warn!("lost executor {executor_id} at {}: {reason}", e.addr);
        self.scheduler
            .executor_lost(executor_id, reason, caused_by_app);
    }
}

impl Endpoint for DriverEndpoint {
    type Msg = DriverMsg;

    fn receive(
        &mut self,
        ctx: &EndpointCtx<DriverMsg>,
        from: Peer,
        msg: DriverMsg,
        reply: Option<Replier>,
    ) {
        match msg {
            DriverMsg::RegisterExecutor {
                executor_id,
                host,
                port,
                cores,
            } => {
                use std::collections::hash_map::Entry;
                let r: std::result::Result<(), String> = if from.via != Via::Accepted
                    || cores == 0
                    || cores > MAX_EXECUTOR_CORES
                {
                    Err("an executor registers over its own connection, with cores".into())
                } else if self.closing {
                    Err("the application is stopping".into())
                } else {
                    match self.executors.entry(executor_id) {
                        Entry::Occupied(o) => Err(format!("Duplicate executor ID: {}", o.key())),
                        Entry::Vacant(v) => {
                            // The executor is its connection: messages for it
                            // go back over the connection it opened.
                            tracing::info!(
                                "Registered executor {} at {} ({host}:{port}) with {cores} cores",
                                v.key(),
                                from.addr
                            );
                            v.insert(Exec {
                                addr: from.addr.clone(),
                                cores,
                                free: cores,
                                last_heartbeat: Instant::now(),
                            });
                            self.total_cores.fetch_add(cores, Ordering::SeqCst);
                            self.registered.fetch_add(1, Ordering::SeqCst);
                            Ok(())
                        }
                    }
                };
                if let Some(rp) = reply {
                    rp.reply(&r);
                }
                self.make_offers(ctx);
            }
            DriverMsg::GetConf => {
                if let Some(rp) = reply {
                    rp.reply(&self.conf);
                }
            }
            DriverMsg::StatusUpdate {
                executor_id,
                task_id,
                end,
                duration_ms,
                metrics,
            } => {
                // Only the executor the task was sent to may report it.
                let owner = self.running.get(&task_id);
                let known = owner == Some(&executor_id)
                    && self
                        .executors
                        .get(&executor_id)
                        .is_some_and(|e| e.addr == from.addr);
                if !known {
                    tracing::warn!("ignoring a status update for task {task_id} from {from}");
                    return;
                }
                self.running.remove(&task_id);
                let Some(e) = self.executors.get_mut(&executor_id) else {
                    return;
                };
                e.free += self.cpus;
                if let crate::messages::WireTaskEnd::Indirect { size, acc } = end {
                    let addr = e.addr.clone();
                    let p = PendingFetch {
                        executor_id,
                        addr,
                        task_id,
                        size,
                        acc,
                        duration_ms,
                        metrics,
                    };
                    self.fetch_result(ctx, p);
                    self.make_offers(ctx);
                    return;
                }
                let end = match end.into_end() {
                    // An executor reports only outputs it wrote itself.
                    flint_core::task::TaskEnd::Success(flint_core::task::TaskOutput::Map(s), _)
                        if s.executor_id != executor_id =>
                    {
                        flint_core::task::TaskEnd::Failed(FlintError::User(format!(
                            "executor {executor_id} reported a map output of executor {}",
                            s.executor_id
                        )))
                    }
                    end => end,
                };
                self.scheduler.status_update_with_metrics(
                    task_id,
                    end,
                    Duration::from_millis(duration_ms),
                    metrics,
                );
                self.make_offers(ctx);
            }
            DriverMsg::GetSegments { shuffle_id, reduce } => {
                let segments = match self.env.map_outputs.segments(shuffle_id, reduce) {
                    Ok(v) => Ok(v
                        .into_iter()
                        .map(|s| WireSegment {
                            map_id: s.map_id,
                            attempt: s.attempt,
                            executor_id: s.executor_id,
                            start: s.start,
                            len: s.len,
                        })
                        .collect::<Vec<_>>()),
                    Err(FlintError::FetchFailed {
                        map_id,
                        executor,
                        reason,
                        ..
                    }) => Err(WireFetchFailure {
                        map_id,
                        executor,
                        reason,
                    }),
                    Err(e) => Err(WireFetchFailure {
                        map_id: 0,
                        executor: None,
                        reason: e.to_string(),
                    }),
                };
                let mut named: Vec<&str> = match &segments {
                    Ok(v) => v.iter().map(|s| s.executor_id.as_str()).collect(),
                    Err(_) => Vec::new(),
                };
                named.sort_unstable();
                named.dedup();
                let executors = named
                    .into_iter()
                    .filter_map(|id| {
                        self.executors
                            .get(id)
                            .map(|e| (id.to_string(), e.addr.clone()))
                    })
                    .collect();
                if let Some(rp) = reply {
                    rp.reply(&ReduceSegments {
                        segments,
                        executors,
                    });
                }
            }
            DriverMsg::GetSlice { rdd, slice } => {
                crate::metrics::SLICES_SERVED.fetch_add(1, Ordering::Relaxed);
                if let Some(rp) = reply {
                    self.reply_encoded(
                        rp,
                        flint_core::storage::BlockId::ParallelSlice { rdd, slice },
                        &format!("slice {slice} of parallelized collection {rdd}"),
                        "parallelize into more slices",
                    );
                }
            }
            DriverMsg::GetBroadcast { id } => {
                crate::metrics::BROADCASTS_SERVED.fetch_add(1, Ordering::Relaxed);
                if let Some(rp) = reply {
                    self.reply_encoded(
                        rp,
                        flint_core::storage::BlockId::Broadcast { id },
                        &format!("broadcast {id}"),
                        "broadcast a smaller value",
                    );
                }
            }
            DriverMsg::GetTaskBinary { id } => {
                crate::metrics::TASK_BINARIES_SERVED.fetch_add(1, Ordering::Relaxed);
                let Some(rp) = reply else { return };
                match self.binaries.get(id) {
                    None => rp.reply(&Err::<(), String>(format!(
                        "the driver no longer has stage binary {id}: its stage has ended"
                    ))),
                    // Copied and encoded off the RPC thread: it is large
                    // (only binaries over INLINE_BINARY are fetched).
                    Some((b, mac)) => {
                        tokio::task::spawn_blocking(move || {
                            let mut signed = (*b).clone();
                            signed.mac = Some(mac);
                            rp.reply_blocking(&Ok::<_, String>(signed));
                        });
                    }
                }
            }
            DriverMsg::Heartbeat { executor_id, tasks } => {
                let known = match self.executors.get_mut(&executor_id) {
                    Some(e) if e.addr == from.addr => {
                        e.last_heartbeat = Instant::now();
                        true
                    }
                    // Being stopped: it waits to be told, rather than exit
                    // as unknown (an exit the Master might replace).
                    _ => self.stopping.contains(&from.addr),
                };
                // Only tasks the driver sent to this executor.
                let tasks: Vec<_> = tasks
                    .into_iter()
                    .filter(|(t, _)| self.running.get(t) == Some(&executor_id))
                    .collect();
                if known && !tasks.is_empty() {
                    self.scheduler.executor_metrics(&executor_id, tasks);
                }
                if let Some(rp) = reply {
                    rp.reply(&known);
                }
            }
            DriverMsg::GetBroadcastLocation { id } => {
                // A holder other than the asker, taken in turn so that the
                // copies spread the load.
                let holders = self.broadcast_holders.get(&id).cloned().unwrap_or_default();
                let n = holders.len().max(1);
                let start = self.broadcast_turn;
                self.broadcast_turn = self.broadcast_turn.wrapping_add(1);
                let holder = (0..holders.len()).find_map(|k| {
                    let id = &holders[(start + k) % n];
                    self.executors
                        .get(id)
                        .filter(|e| e.addr != from.addr)
                        .map(|e| (id.clone(), e.addr.clone()))
                });
                let at = holder.and_then(|(exec, addr)| {
                    let sum = self.broadcast_sum(id)?;
                    Some((exec, addr, sum))
                });
                if let Some(rp) = reply {
                    rp.reply(&at);
                }
            }
            DriverMsg::BroadcastHeld { executor_id, id } => {
                let mine = self
                    .executors
                    .get(&executor_id)
                    .is_some_and(|e| e.addr == from.addr);
                // Only for broadcasts the driver still has.
                let live = self
                    .env
                    .blocks
                    .get::<flint_core::env::EncodedBlock>(flint_core::storage::BlockId::Broadcast {
                        id,
                    })
                    .is_some();
                if mine && live {
                    let v = self.broadcast_holders.entry(id).or_default();
                    if !v.contains(&executor_id) {
                        v.push(executor_id);
                    }
                }
            }
            DriverMsg::GetBlockLocation { rdd, split } => {
                let at = self.blocks.read().get(&(rdd, split)).and_then(|v| {
                    v.iter().find_map(|(id, _)| {
                        self.executors
                            .get(id)
                            .filter(|e| e.addr != from.addr)
                            .map(|e| (id.clone(), e.addr.clone()))
                    })
                });
                if let Some(rp) = reply {
                    rp.reply(&at);
                }
            }
            DriverMsg::BlocksUpdated {
                executor_id,
                added,
                removed,
            } => {
                let Some(e) = self
                    .executors
                    .get(&executor_id)
                    .filter(|e| e.addr == from.addr)
                else {
                    return;
                };
                let host = e.addr.host.clone();
                let mut map = self.blocks.write();
                for b in removed {
                    if let Some(v) = map.get_mut(&b) {
                        v.retain(|(id, _)| id != &executor_id);
                        if v.is_empty() {
                            map.remove(&b);
                        }
                    }
                }
                // Executors cannot make the driver's map grow without bound
                // (it only steers locality: past the bound, new blocks are
                // simply not located).
                if added.len() > MAX_CACHED_BLOCKS.saturating_sub(map.len()) {
                    tracing::warn!(
                        "executor {executor_id} reports {} more cached blocks, over the {MAX_CACHED_BLOCKS} tracked; not tracking them",
                        added.len()
                    );
                    return;
                }
                for b in added {
                    let v = map.entry(b).or_default();
                    if !v.iter().any(|(id, _)| id == &executor_id) {
                        v.push((executor_id.clone(), host.clone()));
                    }
                }
            }
            DriverMsg::ExpireDeadExecutors => {
                let now = Instant::now();
                let late = self.expiry_check.lateness(now);
                if late > Duration::from_millis(500) {
                    tracing::warn!(
                        "the driver did not run for {} ms (stopped or starved of CPU): executors' heartbeat deadlines extended by as much",
                        late.as_millis()
                    );
                }
                for e in self.executors.values_mut() {
                    flint_deploy::excuse(&mut e.last_heartbeat, late, now);
                }
                let dead: Vec<(String, Duration)> = self
                    .executors
                    .iter()
                    .map(|(id, e)| (id.clone(), now.duration_since(e.last_heartbeat)))
                    .filter(|(_, silent)| *silent > self.timeout)
                    .collect();
                for (id, silent) in dead {
                    self.lost(
                        &id,
                        &format!(
                            "Executor heartbeat timed out after {} ms (flint.network.timeout)",
                            silent.as_millis()
                        ),
                        true,
                        ctx,
                    );
                }
            }
            DriverMsg::CheckStarvation => {
                let starving = self.running.is_empty()
                    && self
                        .last_launch
                        .is_none_or(|t| t.elapsed() >= self.starvation)
                    && self.scheduler.has_active_task_sets();
                if starving {
                    tracing::warn!(
                        "Initial job has not accepted any resources; check your cluster UI to ensure that workers are registered and have sufficient resources"
                    );
                }
            }
            DriverMsg::Revive => self.make_offers(ctx),
            DriverMsg::Kill { task_id } => {
                if let Some(e) = self
                    .running
                    .get(&task_id)
                    .and_then(|x| self.executors.get(x))
                {
                    let _ = ctx.env.send_accepted(
                        &e.addr,
                        EXECUTOR_ENDPOINT,
                        &ExecutorMsg::KillTask { task_id },
                    );
                }
            }
            DriverMsg::StopExecutors => {
                // Forgotten first, so their connections closing next (the
                // Master kills them once the application is unregistered)
                // is not a loss; told to stop by `AwaitExecutorsGone`.
                self.closing = true;
                self.stopping
                    .extend(self.executors.drain().map(|(_, e)| e.addr));
                if let Some(r) = reply {
                    r.reply(&());
                }
            }
            DriverMsg::AwaitExecutorsGone => {
                for addr in &self.stopping {
                    let _ =
                        ctx.env
                            .send_accepted(addr, EXECUTOR_ENDPOINT, &ExecutorMsg::StopExecutor);
                }
                self.stopped = reply;
                self.all_stopped();
            }
            DriverMsg::Lost {
                executor_id,
                reason,
                caused_by_app,
            } => self.lost(&executor_id, &reason, caused_by_app, ctx),
            DriverMsg::ResultFetched {
                executor_id,
                task_id,
                size,
                result,
                acc,
                duration_ms,
                metrics,
            } => {
                let end = match result {
                    Ok(bytes) => flint_core::task::TaskEnd::Success(
                        flint_core::task::TaskOutput::Value(bytes),
                        acc,
                    ),
                    Err(e) => flint_core::task::TaskEnd::Failed(FlintError::User(format!(
                        "cannot fetch the result of task {task_id} from executor {executor_id}: {e}"
                    ))),
                };
                self.scheduler.status_update_with_metrics(
                    task_id,
                    end,
                    Duration::from_millis(duration_ms),
                    metrics,
                );
                self.in_flight = self.in_flight.saturating_sub(size);
                while let Some(next) = self.waiting.front() {
                    if self.in_flight > 0 && self.in_flight + next.size > self.max_result_size {
                        break;
                    }
                    let Some(p) = self.waiting.pop_front() else {
                        break;
                    };
                    self.fetch_result(ctx, p);
                }
            }
            DriverMsg::Cleanup(task) => {
                if let flint_core::cleaner::CleanupTask::Broadcast(id) = task {
                    self.broadcast_holders.remove(&id);
                    self.broadcast_sums.remove(&id);
                }
                if let flint_core::cleaner::CleanupTask::Rdd(id) = task {
                    self.blocks.write().retain(|(r, _), _| *r != id);
                    self.shipped.retain(|(_, r, _)| *r != id);
                }
                for e in self.executors.values() {
                    let _ = ctx.env.send_accepted(
                        &e.addr,
                        EXECUTOR_ENDPOINT,
                        &ExecutorMsg::Cleanup(task),
                    );
                }
            }
        }
    }

    fn on_disconnected(&mut self, ctx: &EndpointCtx<DriverMsg>, peer: &RpcAddress) {
        if self.stopping.remove(peer) {
            self.all_stopped();
        }
        let gone: Vec<String> = self
            .executors
            .iter()
            .filter(|(_, e)| &e.addr == peer)
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.lost(&id, "its connection to the driver closed", true, ctx);
        }
    }
}

/// The application's id, and the master that gave it: only that master is
/// asked to kill executors and to unregister the application (a listed
/// master that never answered would hold up every stop).
struct Registration {
    app_id: String,
    master: RpcAddress,
}

type Registered = Arc<Mutex<Option<Registration>>>;

/// The application's client of the Master (Spark's StandaloneAppClient).
struct AppClient {
    driver: LocalRef<DriverMsg>,
    app_id: Registered,
    /// Only the masters this client dialed speak for the cluster.
    masters: Vec<RpcAddress>,
    scheduler: Arc<TaskScheduler>,
    /// Why the Master removed the application, if it did.
    refused: Arc<Mutex<Option<String>>>,
    /// Masters that refused the application before one registered it: the
    /// context fails when every listed master has.
    refusals: std::collections::HashSet<RpcAddress>,
    /// Why each master did not take the application (for the message if
    /// none does).
    why_not: Arc<Mutex<HashMap<String, String>>>,
}

impl Endpoint for AppClient {
    type Msg = AppClientMsg;

    fn receive(
        &mut self,
        ctx: &EndpointCtx<AppClientMsg>,
        from: Peer,
        msg: AppClientMsg,
        _: Option<Replier>,
    ) {
        if from.via != Via::Dialed || !self.masters.contains(&from.addr) {
            tracing::warn!(
                "ignoring {msg:?} from {from}: not a master this application registered with"
            );
            return;
        }
        // Once one master runs the application, only it speaks for it (a
        // second one that also took it is letting it go).
        let runs_it = self.app_id.lock().as_ref().map(|r| r.master == from.addr);
        if runs_it == Some(false) && !matches!(msg, AppClientMsg::RegisteredApplication { .. }) {
            tracing::debug!("ignoring {msg:?} from {from}: the application runs on another master");
            return;
        }
        match msg {
            AppClientMsg::RegisteredApplication { app_id, .. } => {
                let mut slot = self.app_id.lock();
                match &*slot {
                    None => {
                        tracing::info!("Connected to master {from}; application {app_id}");
                        *slot = Some(Registration {
                            app_id,
                            master: from.addr.clone(),
                        });
                    }
                    // One master runs the application (as one active master
                    // of a Spark HA group does): another that also took it
                    // is told to let it go, so that no second set of
                    // executors starts, and the stop has one master to tell.
                    Some(r) if r.master != from.addr => {
                        tracing::info!(
                            "Master {from} also registered the application (as {app_id}); it is running on {}: unregistering there",
                            r.master
                        );
                        let _ = ctx.env.send(
                            &from.addr,
                            MASTER_ENDPOINT,
                            &MasterMsg::UnregisterApplication { app_id },
                        );
                    }
                    Some(_) => {}
                }
            }
            AppClientMsg::ExecutorAdded {
                id,
                worker_id,
                host_port,
                cores,
                ..
            } => {
                tracing::info!(
                    "Granted executor {id} on worker {worker_id} ({host_port}) with {cores} cores"
                );
            }
            AppClientMsg::ExecutorUpdated {
                id, state, message, ..
            } => {
                if state.is_finished() || state == ExecutorState::Lost {
                    self.driver.send(DriverMsg::Lost {
                        executor_id: id.to_string(),
                        reason: format!("{state:?}: {}", message.unwrap_or_default()),
                        // The Master reports LOST for a Worker it lost.
                        caused_by_app: state != ExecutorState::Lost,
                    });
                }
            }
            AppClientMsg::WorkerRemoved { id, message, .. } => {
                // Its executors were each reported LOST just before.
                tracing::warn!("worker {id} removed: {message}");
            }
            AppClientMsg::ApplicationRemoved { message } if runs_it.is_none() => {
                // Refused before any master took it: another may yet.
                self.refusals.insert(from.addr.clone());
                if self.refusals.len() < self.masters.len() {
                    tracing::warn!("master {from} refused the application: {message}");
                    self.why_not
                        .lock()
                        .insert(from.addr.to_string(), format!("refused: {message}"));
                    return;
                }
                tracing::error!("Application has been killed. Reason: {message}");
                self.refused.lock().get_or_insert_with(|| message.clone());
                self.scheduler
                    .abort_all(&format!("Master removed our application: {message}"));
            }
            AppClientMsg::ApplicationRemoved { message } => {
                tracing::error!("Application has been killed. Reason: {message}");
                // Before registration, it is the Master's refusal: the
                // context fails with it at once.
                self.refused.lock().get_or_insert_with(|| message.clone());
                // No executor will come: fail the jobs rather than wait forever.
                self.scheduler
                    .abort_all(&format!("Master removed our application: {message}"));
            }
        }
    }

    fn on_disconnected(&mut self, _: &EndpointCtx<AppClientMsg>, peer: &RpcAddress) {
        // As Spark's client, the application goes on with the executors it
        // has (they talk to the driver, not the Master); only new ones,
        // to replace lost executors, need a Master.
        if self
            .app_id
            .lock()
            .as_ref()
            .is_some_and(|r| &r.master == peer)
        {
            tracing::warn!(
                "Connection to master {peer} lost: the application keeps the executors it has, but cannot replace any it loses"
            );
        }
    }
}

struct ClusterBackend {
    rt: Mutex<Option<tokio::runtime::Runtime>>,
    driver: LocalRef<DriverMsg>,
    app_env: RpcEnv,
    master_env: RpcEnv,
    app_id: Registered,
    local: Mutex<Option<(LocalCluster, ExitCleanedDir)>>,
    total_cores: Arc<AtomicUsize>,
    blocks: BlockMap,
}

impl SchedulerBackend for ClusterBackend {
    fn revive_offers(&self) {
        self.driver.send(DriverMsg::Revive);
    }
    fn kill_task(&self, task_id: u64) {
        self.driver.send(DriverMsg::Kill { task_id });
    }
    fn default_parallelism(&self) -> usize {
        self.total_cores.load(Ordering::SeqCst).max(2)
    }
    fn cleanup(&self, task: flint_core::cleaner::CleanupTask) {
        self.driver.send(DriverMsg::Cleanup(task));
    }
    fn block_locations(
        &self,
        id: flint_core::storage::BlockId,
    ) -> Vec<flint_core::scheduler::TaskLocation> {
        let flint_core::storage::BlockId::Rdd { rdd, split } = id else {
            return Vec::new();
        };
        self.blocks
            .read()
            .get(&(rdd, split))
            .map(|v| {
                v.iter()
                    .map(|(exec, host)| flint_core::scheduler::TaskLocation {
                        host: host.clone(),
                        executor: Some(exec.clone()),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
    fn stop(&self) {
        let Some(rt) = self.rt.lock().take() else {
            self.driver.send(DriverMsg::StopExecutors);
            self.driver.send(DriverMsg::AwaitExecutorsGone);
            return;
        };
        // The Master is told to launch no more executors (it would replace
        // each one that exits), the executors are forgotten (their exits
        // are no loss), told to stop and waited for, and only then is the
        // application unregistered (which has their Workers kill what is
        // left): each exits by itself, and nothing is cut off half-way.
        // Each step is bounded; a local cluster's daemons are stopped next,
        // and the connections closed.
        let registration = self
            .app_id
            .lock()
            .as_ref()
            .map(|r| (r.app_id.clone(), r.master.clone()));
        let unregister = |registration: Option<(String, RpcAddress)>| {
            // Taken: once unregistered, a closing master connection is no news.
            self.app_id.lock().take();
            if let Some((app_id, master)) = registration {
                let _ = rt.block_on(self.master_env.ask::<_, ()>(
                    &master,
                    MASTER_ENDPOINT,
                    &MasterMsg::UnregisterApplication { app_id },
                    STOP_WAIT,
                ));
            }
        };
        let limited = registration.as_ref().is_none_or(|(app_id, master)| {
            rt.block_on(self.master_env.ask::<_, ()>(
                master,
                MASTER_ENDPOINT,
                &MasterMsg::RequestExecutors {
                    app_id: app_id.clone(),
                    total: 0,
                },
                STOP_WAIT,
            ))
            .is_ok()
        });
        let _ = rt.block_on(self.driver.ask::<()>(DriverMsg::StopExecutors, STOP_WAIT));
        if !limited {
            // A Master that cannot limit them (an older one): unregistered
            // before they stop, so that it replaces none; their Workers end
            // them (forgotten just before, their exits are no loss).
            unregister(registration.clone());
        }
        let _ = rt.block_on(
            self.driver
                .ask::<()>(DriverMsg::AwaitExecutorsGone, STOP_WAIT),
        );
        if limited {
            unregister(registration);
        }
        if let Some((cluster, _dir)) = self.local.lock().take() {
            rt.block_on(cluster.stop());
        }
        self.app_env.shutdown();
        self.master_env.shutdown();
        rt.shutdown_timeout(Duration::from_secs(2));
    }
}

/// `flint.executor.cores` and `flint.cores.max`, each a positive whole
/// number when set, and `flint.executor.memory`, at least 1 MiB: refused
/// before anything starts, as spark-submit refuses them ("must be a positive
/// number"); a zero would have the Master start executors that can run nothing.
pub(crate) fn resource_settings(conf: &FlintConf) -> Result<(Option<u32>, Option<u32>)> {
    let positive = |key: &str, what: &str| -> Result<Option<u32>> {
        conf.get(key)
            .map(|v| {
                v.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        FlintError::Config(format!("{key}={v}: {what} must be a positive number"))
                    })
            })
            .transpose()
    };
    let cores = positive("flint.executor.cores", "executor cores")?;
    let max = positive("flint.cores.max", "total executor cores")?;
    if conf.get("flint.executor.memory").is_some() {
        let m = conf.get_bytes("flint.executor.memory", 0)?;
        if m < 1 << 20 {
            return Err(FlintError::Config(format!(
                "flint.executor.memory={m} bytes: executor memory must be at least 1m"
            )));
        }
    }
    Ok((cores, max))
}

/// The cluster's secret for the connection to the Master, from
/// `flint.authenticate.secret` or the file `flint.authenticate.secret.file`.
/// A driver launched by a Worker (cluster deploy mode) gets it in its
/// environment instead.
fn cluster_secret(conf: &flint_core::FlintConf) -> Result<Option<String>> {
    let s = flint_deploy::resolve_secret(|k| conf.get(k)).map_err(FlintError::Config)?;
    Ok(s.or_else(|| std::env::var(flint_deploy::SECRET_ENV).ok()))
}

/// Posts `msg()` to the driver endpoint every `period` (its timers), from
/// the driver's runtime; the first tick comes after one period.
fn every(period: Duration, driver: LocalRef<DriverMsg>, msg: fn() -> DriverMsg) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        // After a pause, one tick rather than a burst of the missed ones.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            driver.send(msg());
        }
    });
}

/// Registrations sent before the application gives up (Spark's
/// REGISTRATION_RETRIES).
const REGISTRATION_RETRIES: u32 = 3;

fn humantime(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// `flint.network.timeout` (120s) and `flint.executor.heartbeatInterval`
/// (10s); the interval must be shorter, as Spark requires.
fn heartbeat_settings(conf: &FlintConf) -> Result<(Duration, Duration)> {
    let timeout = conf.get_duration("flint.network.timeout", Duration::from_secs(120))?;
    let interval =
        conf.get_duration("flint.executor.heartbeatInterval", Duration::from_secs(10))?;
    if interval.is_zero() || interval >= timeout {
        return Err(FlintError::Config(format!(
            "The value of flint.network.timeout={}ms must be greater than the value of flint.executor.heartbeatInterval={}ms (and the interval above zero)",
            timeout.as_millis(),
            interval.as_millis()
        )));
    }
    Ok((timeout, interval))
}

/// Parses `flint://h:p[,h:p...]`.
pub(crate) fn masters_of(url: &str) -> Result<Vec<RpcAddress>> {
    let rest = url
        .strip_prefix("flint://")
        .ok_or_else(|| FlintError::MasterUrl {
            url: url.into(),
            reason: "expected flint://host:port".into(),
        })?;
    let mut masters: Vec<RpcAddress> = Vec::new();
    for hp in rest.split(',') {
        let m = RpcAddress::parse(hp).map_err(|e| FlintError::MasterUrl {
            url: url.into(),
            reason: e.to_string(),
        })?;
        // A master listed twice is one master.
        if !masters.contains(&m) {
            masters.push(m);
        }
    }
    Ok(masters)
}

/// Starts the backend: the driver endpoint, the application's registration
/// with the Master (after starting one for `local-cluster`), and waits for
/// executors.
pub fn start(s: ClusterStart) -> Result<Arc<dyn SchedulerBackend>> {
    let io = |what: &'static str| move |e: std::io::Error| FlintError::io("cannot start", what, e);
    let rt = crate::rpc_runtime("flint-driver-rpc").map_err(io("the driver's RPC runtime"))?;
    let host = s.conf.get_or("flint.driver.host", "127.0.0.1").to_string();
    // Settings only executors read: checked here, so a bad value fails the
    // context with its message rather than every executor at start-up.
    crate::executor::FetchRetry::from_conf(&s.conf)?;
    s.conf.get_bool("flint.shuffle.readHostLocalDisk", true)?;
    let (executor_cores, max_cores) = resource_settings(&s.conf)?;
    let secret = flint_deploy::hex(&s.app_secret);
    let cpus = s.scheduler.cpus_per_task();
    let total_cores = Arc::new(AtomicUsize::new(0));
    let registered = Arc::new(AtomicUsize::new(0));
    let mut exec_conf = s.conf.clone();
    // The cluster's secret is not the executors' business.
    exec_conf.remove("flint.authenticate.secret");
    exec_conf.remove("flint.authenticate.secret.file");
    let (local, masters, expected, local_memory_mb) =
        if let Some(spec) = s.master.strip_prefix("local-cluster") {
            let (n, c, m) = flint_deploy::parse_local_cluster(&s.master).map_err(|reason| {
                FlintError::MasterUrl {
                    url: format!("local-cluster{spec}"),
                    reason,
                }
            })?;
            let dir = tempfile::Builder::new()
                .prefix("flint-local-cluster-")
                .tempdir()
                .map_err(io("a local-cluster work dir"))?;
            // Removed at exit even if the context never is dropped.
            let dir = ExitCleanedDir::new(dir);
            let cluster = rt
                .block_on(LocalCluster::start(n, c, m, dir.path()))
                .map_err(|e| FlintError::Cluster(format!("cannot start {}: {e}", s.master)))?;
            let masters = vec![cluster.master.address.clone()];
            (Some((cluster, dir)), masters, n, Some(m))
        } else {
            (None, masters_of(&s.master)?, 1, None)
        };
    let (network_timeout, heartbeat) = heartbeat_settings(&s.conf)?;
    let expiry_period = (network_timeout / 4).min(Duration::from_secs(60));
    let revive_interval = s
        .conf
        .get_duration("flint.scheduler.revive.interval", Duration::from_secs(1))?
        .max(Duration::from_millis(10));
    let max_message_size = s.conf.rpc_max_message_size()?;
    // What may wait for one executor that does not read (the daemons' flag
    // of the same name); at least two frames.
    let max_queued_bytes = match s.conf.get("flint.rpc.maxQueuedBytes") {
        None => crate::default_max_queued(max_message_size),
        Some(_) => {
            let n = s.conf.get_bytes("flint.rpc.maxQueuedBytes", 0)?;
            usize::try_from(n)
                .ok()
                .filter(|n| *n >= 2 * max_message_size)
                .ok_or_else(|| {
                    FlintError::Config(format!(
                        "flint.rpc.maxQueuedBytes={n} must be at least twice flint.rpc.message.maxSize ({} bytes)",
                        2 * max_message_size
                    ))
                })?
        }
    };
    let starvation = s
        .conf
        .get_duration("flint.starvation.timeout", Duration::from_secs(15))?
        .max(Duration::from_millis(10));
    exec_conf.set_mut(
        "flint.executor.heartbeatInterval",
        format!("{}ms", heartbeat.as_millis()),
    );
    let app_id: Registered = Arc::new(Mutex::new(None));
    // Why each master did not take the application, as far as it is known.
    let unreachable: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let refused: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let blocks: BlockMap = Arc::default();
    let (app_env, master_env, driver) = rt.block_on(async {
        let app_env = RpcEnv::server(
            &host,
            0,
            &host,
            RpcConf {
                secret: Some(secret.clone()),
                max_message_size,
                max_queued_bytes,
                ..RpcConf::default()
            },
        )
        .await
        .map_err(|e| FlintError::Config(e.to_string()))?;
        let master_env = RpcEnv::server(
            &host,
            0,
            &host,
            RpcConf {
                // An in-process local-cluster has no secret of its own.
                secret: if local.is_some() {
                    None
                } else {
                    cluster_secret(&s.conf)?
                },
                ..RpcConf::default()
            },
        )
        .await
        .map_err(|e| FlintError::Config(e.to_string()))?;
        let kill_executors: KillExecutors = {
            let (env, app_id) = (master_env.clone(), app_id.clone());
            Arc::new(move |executor_ids: Vec<u32>| {
                let Some((app_id, master)) = app_id
                    .lock()
                    .as_ref()
                    .map(|r| (r.app_id.clone(), r.master.clone()))
                else {
                    return;
                };
                let _ = env.send(
                    &master,
                    MASTER_ENDPOINT,
                    &MasterMsg::KillExecutors {
                        app_id,
                        executor_ids,
                    },
                );
            })
        };
        let driver = app_env.setup_endpoint(
            DRIVER_ENDPOINT,
            DriverEndpoint {
                scheduler: s.scheduler.clone(),
                env: s.env.clone(),
                conf: exec_conf,
                executors: HashMap::new(),
                running: HashMap::new(),
                total_cores: total_cores.clone(),
                registered: registered.clone(),
                cpus,
                max_reply: max_message_size - 4096,
                round_budget: (max_queued_bytes / 4).min(16 << 20),
                max_queued: max_queued_bytes,
                max_result_size: s.conf.get_bytes("flint.driver.maxResultSize", 1 << 30)?,
                timeout: network_timeout,
                expiry_check: flint_deploy::LateCheck::new(expiry_period),
                kill_executors,
                stopping: Default::default(),
                closing: false,
                stopped: None,
                last_launch: None,
                starvation,
                task_key: s.app_secret.clone(),
                binaries: TaskBinaries::default(),
                in_flight: 0,
                waiting: Default::default(),
                shipped: Default::default(),
                broadcast_holders: HashMap::new(),
                broadcast_turn: 0,
                broadcast_sums: HashMap::new(),
                blocks: blocks.clone(),
            },
        );
        every(starvation, driver.clone(), || DriverMsg::CheckStarvation);
        // Spark's HeartbeatReceiver checks at an interval of its own.
        every(expiry_period, driver.clone(), || {
            DriverMsg::ExpireDeadExecutors
        });
        // Spark's spark.scheduler.revive.interval: offers are also made
        // periodically, so delay scheduling relaxes its locality level
        // without waiting for an event, as the local backend does.
        every(revive_interval, driver.clone(), || DriverMsg::Revive);
        Ok::<_, FlintError>((app_env, master_env, driver))
    })?;
    rt.block_on(async {
        master_env.setup_endpoint(
            APP_CLIENT_ENDPOINT,
            AppClient {
                driver: driver.clone(),
                app_id: app_id.clone(),
                masters: masters.clone(),
                scheduler: s.scheduler.clone(),
                refused: refused.clone(),
                refusals: Default::default(),
                why_not: unreachable.clone(),
            },
        );
    });
    let exe = std::env::current_exe().map_err(io("the application binary"))?;
    // Rebuilt since it started (the running file was replaced): a
    // local-cluster's executors start from the path, so the new build's
    // refusal of this driver's tasks names both builds, rather than the
    // launch failing on "PATH (deleted)".
    let exe = match exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
        Some(p) if std::path::Path::new(p).exists() => std::path::PathBuf::from(p),
        _ => exe,
    };
    // On a real cluster, Workers fetch this binary from the driver by its
    // hash (they may not share its file system) and cache it; a
    // local-cluster's Workers run it where it is.
    let binary = if local.is_none() {
        let running = std::path::Path::new("/proc/self/exe");
        let sha256 = flint_deploy::sha256_file(running).map_err(io("the application binary"))?;
        let size = std::fs::metadata(running)
            .map_err(io("the application binary"))?
            .len();
        let served = flint_deploy::binaries::Served::default();
        // The running file, even if a rebuild replaced the path since.
        served.insert(sha256.clone(), std::path::PathBuf::from("/proc/self/exe"));
        rt.block_on(async {
            master_env.setup_endpoint(
                flint_deploy::binaries::BINARY_ENDPOINT,
                flint_deploy::binaries::BinaryServer(served),
            );
        });
        let source = master_env
            .address()
            .cloned()
            .ok_or_else(|| FlintError::Config("the driver's RPC address is unknown".into()))?;
        Some(flint_deploy::messages::BinaryRef {
            sha256,
            size,
            source,
        })
    } else {
        None
    };
    let driver_url = app_env
        .address()
        .map(ToString::to_string)
        .unwrap_or_default();
    // local-cluster[N,C,M]: executors default to the workers' M MiB, as in Spark.
    let default_memory = local_memory_mb.map_or(1 << 30, |m| m << 20);
    let memory_mb = s.conf.get_bytes("flint.executor.memory", default_memory)? >> 20;
    let cores_per_executor = match executor_cores {
        Some(n) => Some(n),
        None if local.is_some() => s
            .master
            .strip_prefix("local-cluster[")
            .and_then(|r| r.split(',').nth(1))
            .and_then(|c| c.trim().parse().ok()),
        None => None,
    };
    let program = if binary.is_some() {
        "{{APP_BINARY}}".into()
    } else {
        exe.to_string_lossy().into_owned()
    };
    let desc = ApplicationDescription {
        name: s.app_name.clone(),
        binary,
        max_cores,
        memory_per_executor_mb: memory_mb,
        cores_per_executor,
        command: Command {
            program,
            args: Vec::new(),
            env: vec![
                (flint_core::executor::ROLE_VAR.into(), "executor".into()),
                (crate::DRIVER_URL_VAR.into(), driver_url),
                (crate::EXECUTOR_ID_VAR.into(), "{{EXECUTOR_ID}}".into()),
                (crate::EXECUTOR_CORES_VAR.into(), "{{CORES}}".into()),
                (crate::EXECUTOR_HOST_VAR.into(), "{{HOSTNAME}}".into()),
                // The environment of a process is readable only by its user
                // (argv is readable by all).
                (crate::APP_SECRET_VAR.into(), secret),
                (crate::MAX_MESSAGE_VAR.into(), max_message_size.to_string()),
                (crate::MAX_QUEUED_VAR.into(), max_queued_bytes.to_string()),
            ],
        },
        app_ui_url: String::new(),
        event_log_dir: None,
        user: flint_deploy::current_user(),
    };
    let register = || {
        for m in &masters {
            if let Err(e) = master_env.send(
                m,
                MASTER_ENDPOINT,
                &MasterMsg::RegisterApplication { desc: desc.clone() },
            ) {
                tracing::warn!("cannot register with master {m}: {e}");
            }
            // The registration is one-way: a small question over the same
            // connection tells a refused handshake (a wrong secret: final, at
            // once) from a master not (yet) there (retried, as Spark does).
            let (env, m, refused, unreachable) = (
                master_env.clone(),
                m.clone(),
                refused.clone(),
                unreachable.clone(),
            );
            rt.spawn(async move {
                let probe = MasterMsg::RequestDriverStatus {
                    driver_id: String::new(),
                };
                let r: std::result::Result<flint_deploy::messages::DriverStatusResponse, _> = env
                    .ask(&m, MASTER_ENDPOINT, &probe, Duration::from_secs(10))
                    .await;
                if let Err(flint_rpc::RpcError::Connection { reason, .. }) = r {
                    if reason.contains("refused by peer") {
                        refused.lock().get_or_insert_with(|| {
                            format!("{reason} (check flint.authenticate.secret)")
                        });
                    }
                    unreachable.lock().insert(m.to_string(), reason);
                }
            });
        }
    };
    register();
    // Spark's registration rule: 3 attempts, 20 s apart, then give up.
    let registration_timeout = s.conf.get_duration(
        "flint.standalone.registrationTimeout",
        Duration::from_secs(20),
    )?;
    // Wait for executors before the first job (Spark's
    // minRegisteredResourcesRatio / maxRegisteredResourcesWaitingTime).
    let wait = s.conf.get_duration(
        "flint.scheduler.maxRegisteredResourcesWaitingTime",
        Duration::from_secs(30),
    )?;
    let started = Instant::now();
    let (mut attempts, mut attempted) = (1, started);
    let mut failure = None;
    while registered.load(Ordering::SeqCst) < expected {
        let refusal = refused.lock().clone();
        if let Some(why) = refusal.filter(|_| app_id.lock().is_none()) {
            failure = Some(format!("the master refused the application: {why}"));
            break;
        }
        // Some masters refused it and the others cannot be reached: no
        // point waiting for the registration retries.
        if app_id.lock().is_none() {
            let why_not = unreachable.lock();
            if why_not.len() >= masters.len()
                && why_not.values().any(|w| w.starts_with("refused: "))
            {
                let each: Vec<String> = masters
                    .iter()
                    .map(|m| format!("{m} ({})", why_not.get(&m.to_string()).map_or("", |w| w)))
                    .collect();
                failure = Some(format!(
                    "no master took the application: {}",
                    each.join(", ")
                ));
                break;
            }
        }
        if app_id.lock().is_some() {
            if started.elapsed() >= wait {
                break;
            }
        } else if attempted.elapsed() >= registration_timeout {
            if attempts >= REGISTRATION_RETRIES {
                tracing::error!("All masters are unresponsive! Giving up.");
                let seen = unreachable.lock();
                failure = Some(format!(
                    "All masters are unresponsive! Giving up. (no answer from {} to {attempts} registrations, {} apart; is the master running, and is flint.authenticate.secret the cluster's?)",
                    masters
                        .iter()
                        .map(|m| match seen.get(&m.to_string()) {
                            Some(why) => format!("{m} ({why})"),
                            None => m.to_string(),
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                    humantime(registration_timeout)
                ));
                break;
            }
            tracing::warn!("no master answered; registering again");
            register();
            attempts += 1;
            attempted = Instant::now();
        }
        // Polls local atomics: a bounded wait, not synchronisation.
        std::thread::sleep(Duration::from_millis(5));
    }
    if let Some(message) = failure {
        app_env.shutdown();
        master_env.shutdown();
        if let Some((cluster, _dir)) = local {
            rt.block_on(cluster.stop());
        }
        rt.shutdown_timeout(Duration::from_secs(2));
        return Err(FlintError::Cluster(message));
    }
    if registered.load(Ordering::SeqCst) == 0 {
        tracing::warn!(
            "no executor registered within flint.scheduler.maxRegisteredResourcesWaitingTime; jobs will wait for one (check that workers are registered and have free cores and memory)"
        );
    }
    let backend: Arc<dyn SchedulerBackend> = Arc::new(ClusterBackend {
        rt: Mutex::new(Some(rt)),
        driver,
        app_env,
        master_env,
        app_id,
        local: Mutex::new(local),
        total_cores,
        blocks,
    });
    s.scheduler.set_backend(backend.clone());
    Ok(backend)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flint_core::FlintConf;

    #[test]
    fn executors_without_cores_or_memory_are_refused_before_anything_starts() {
        let with = |k: &str, v: &str| FlintConf::new().set(k, v);
        for (k, v, says) in [
            (
                "flint.executor.cores",
                "0",
                "executor cores must be a positive number",
            ),
            (
                "flint.executor.cores",
                "-1",
                "executor cores must be a positive number",
            ),
            (
                "flint.cores.max",
                "0",
                "total executor cores must be a positive number",
            ),
            (
                "flint.executor.memory",
                "0",
                "executor memory must be at least 1m",
            ),
            (
                "flint.executor.memory",
                "512k",
                "executor memory must be at least 1m",
            ),
        ] {
            let err = resource_settings(&with(k, v)).unwrap_err().to_string();
            assert!(err.contains(k) && err.contains(says), "{k}={v}: {err}");
        }
        assert_eq!(
            resource_settings(&with("flint.executor.cores", "2").set("flint.cores.max", "4"))
                .unwrap(),
            (Some(2), Some(4))
        );
        assert!(resource_settings(&with("flint.executor.memory", "1m")).is_ok());
    }

    #[test]
    fn stage_binaries_keep_one_id_while_their_stage_lives() {
        fn d(_: &[u8]) -> std::result::Result<Box<dyn std::any::Any + Send>, String> {
            Ok(Box::new(()))
        }
        let key = b"0123456789abcdef";
        let mut reg = TaskBinaries::default();
        let a = Arc::new(flint_core::ship::Shipped::new("a", d, vec![1; 100]));
        let b = Arc::new(flint_core::ship::Shipped::new("b", d, vec![2; 100]));
        let (ia, ma) = reg.entry(&a, key);
        let (ib, _) = reg.entry(&b, key);
        assert_ne!(ia, ib);
        assert_eq!(reg.entry(&a.clone(), key), (ia, ma), "same binary, same id");
        let (got, mac) = reg.get(ia).unwrap();
        assert!(Arc::ptr_eq(&got, &a));
        let mut signed = (*got).clone();
        signed.mac = Some(mac);
        signed.verify(key).unwrap();
        drop(got);
        // The stage ends: its binary is gone, and forgotten at the next entry.
        drop(a);
        assert!(reg.get(ia).is_none());
        let c = Arc::new(flint_core::ship::Shipped::new("c", d, vec![3; 100]));
        let (ic, _) = reg.entry(&c, key);
        assert!(ic > ib);
        assert_eq!(reg.live.len(), 2, "the ended stage's entry was dropped");
        assert!(reg.get(ib).is_some());
    }

    #[test]
    fn flint_deploy_and_flint_core_name_the_same_submit_variable() {
        assert_eq!(
            flint_deploy::SUBMIT_CONF_VAR,
            flint_core::conf::SUBMIT_CONF_VAR
        );
    }

    #[test]
    fn the_heartbeat_interval_must_be_shorter_than_the_network_timeout() {
        assert_eq!(
            heartbeat_settings(&FlintConf::new()).unwrap(),
            (Duration::from_secs(120), Duration::from_secs(10))
        );
        let short = FlintConf::new()
            .set("flint.network.timeout", "2s")
            .set("flint.executor.heartbeatInterval", "100ms");
        assert_eq!(
            heartbeat_settings(&short).unwrap(),
            (Duration::from_secs(2), Duration::from_millis(100))
        );
        let bad = FlintConf::new().set("flint.network.timeout", "5s");
        let e = heartbeat_settings(&bad).unwrap_err().to_string();
        assert!(
            e.contains("flint.network.timeout=5000ms must be greater than")
                && e.contains("flint.executor.heartbeatInterval=10000ms"),
            "{e}"
        );
    }

    #[test]
    fn the_master_connection_reads_the_secret_or_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secret");
        std::fs::write(&f, "s3cret\n").unwrap();
        let file = f.to_str().unwrap();
        let from_file = FlintConf::new().set("flint.authenticate.secret.file", file);
        assert_eq!(
            cluster_secret(&from_file).unwrap().as_deref(),
            Some("s3cret")
        );
        let inline = FlintConf::new().set("flint.authenticate.secret", "abc");
        assert_eq!(cluster_secret(&inline).unwrap().as_deref(), Some("abc"));
        assert_eq!(cluster_secret(&FlintConf::new()).unwrap(), None);
        let both = inline.set("flint.authenticate.secret.file", file);
        assert!(
            cluster_secret(&both)
                .unwrap_err()
                .to_string()
                .contains("not both")
        );
        let missing = FlintConf::new().set("flint.authenticate.secret.file", "/nonexistent/x");
        assert!(
            cluster_secret(&missing)
                .unwrap_err()
                .to_string()
                .contains("flint.authenticate.secret.file")
        );
    }
}
