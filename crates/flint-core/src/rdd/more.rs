//! The rest of Spark's RDD API that ports reach for: indexing
//! (`zip_with_index`, `zip_with_unique_id`), tree aggregation, `pipe`,
//! `random_split`, `take_sample`, `group_by`, and the pair operations
//! `lookup`, `collect_as_map`, `subtract_by_key`, `sample_by_key` and
//! `repartition_and_sort_within_partitions`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::process::{Child, Command, Stdio};

use serde::{Deserialize, Serialize};

use super::pair::NoAgg;
use super::shuffled::Combine;
use super::{BoxIter, CountFn, Dependency, PartitionFn, Ph, Rdd, RddBase, RddNode, shippable};
use crate::env::TaskContext;
use crate::error::{FlintError, Result};
use crate::func::{Data, Func, Key, engine_fn};
use crate::shuffle::Partitioner;
use crate::util::SplitMix64;

// ---- engine functions -------------------------------------------------------------

#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct IndexFrom<T: Data> {
    starts: Vec<u64>,
    #[serde(skip)]
    _p: Ph<T>,
}
impl<T: Data> IndexFrom<T> {
    fn invoke(&self, (idx, it): (usize, BoxIter<T>)) -> BoxIter<(T, u64)> {
        let start = self.starts[idx];
        Box::new(it.zip(start..))
    }
}
engine_fn!(impl[T: Data] IndexFrom<T>, (usize, BoxIter<T>) => BoxIter<(T, u64)>);

#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct UniqueIds<T: Data> {
    n: u64,
    #[serde(skip)]
    _p: Ph<T>,
}
impl<T: Data> UniqueIds<T> {
    fn invoke(&self, (idx, it): (usize, BoxIter<T>)) -> BoxIter<(T, u64)> {
        let (n, k) = (self.n, idx as u64);
        Box::new(it.zip(0u64..).map(move |(x, i)| (x, i * n + k)))
    }
}
engine_fn!(impl[T: Data] UniqueIds<T>, (usize, BoxIter<T>) => BoxIter<(T, u64)>);

/// One partial aggregate per partition (the first level of `tree_aggregate`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct FoldPartition<T: Data, U: Data, S: Func<(U, T), Output = U>> {
    zero: U,
    seq: S,
    #[serde(skip)]
    _p: Ph<T>,
}
impl<T: Data, U: Data, S: Func<(U, T), Output = U>> FoldPartition<T, U, S> {
    fn invoke(&self, (_, it): (usize, BoxIter<T>)) -> std::iter::Once<U> {
        std::iter::once(it.fold(self.zero.clone(), |a, x| self.seq.call((a, x))))
    }
}
engine_fn!(impl[T: Data, U: Data, S: Func<(U, T), Output = U>] FoldPartition<T, U, S>, (usize, BoxIter<T>) => std::iter::Once<U>);

/// Keys each partial aggregate by its partition index modulo `n` (the next,
/// smaller level of the tree).
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct ModIndex<U: Data> {
    n: usize,
    #[serde(skip)]
    _p: Ph<U>,
}
impl<U: Data> ModIndex<U> {
    fn invoke(&self, (idx, it): (usize, BoxIter<U>)) -> BoxIter<(usize, U)> {
        let k = idx % self.n;
        Box::new(it.map(move |u| (k, u)))
    }
}
engine_fn!(impl[U: Data] ModIndex<U>, (usize, BoxIter<U>) => BoxIter<(usize, U)>);

/// Keeps the elements whose uniform draw falls in `[lb, ub)`; every split of
/// `random_split` draws the same sequence, so the splits are disjoint and
/// cover the input.
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct DrawIn<T: Data> {
    lb: f64,
    ub: f64,
    seed: u64,
    #[serde(skip)]
    _p: Ph<T>,
}
impl<T: Data> DrawIn<T> {
    fn invoke(&self, (idx, it): (usize, BoxIter<T>)) -> BoxIter<T> {
        let mut rng = SplitMix64::new(self.seed ^ (idx as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let (lb, ub) = (self.lb, self.ub);
        Box::new(it.filter(move |_| {
            let u = rng.next_f64();
            lb <= u && u < ub
        }))
    }
}
engine_fn!(impl[T: Data] DrawIn<T>, (usize, BoxIter<T>) => BoxIter<T>);

/// Per-key sampling (Spark's `sampleByKey`): Bernoulli draws without
/// replacement, Poisson counts with.
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct SampleByKeyFn<K: Key, V: Data> {
    fractions: HashMap<K, f64>,
    with_replacement: bool,
    seed: u64,
    #[serde(skip)]
    _p: Ph<V>,
}
impl<K: Key, V: Data> SampleByKeyFn<K, V> {
    fn invoke(&self, (idx, it): (usize, BoxIter<(K, V)>)) -> BoxIter<(K, V)> {
        let mut rng = SplitMix64::new(self.seed ^ (idx as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let fractions = self.fractions.clone();
        let with_replacement = self.with_replacement;
        Box::new(it.flat_map(move |kv| {
            let Some(&f) = fractions.get(&kv.0) else {
                // A task failure with this message (the caller checks keys it knows).
                panic!("sample_by_key: a key has no sampling fraction; give one for every key");
            };
            let n = if with_replacement {
                rng.poisson(f)
            } else {
                usize::from(rng.next_f64() < f)
            };
            std::iter::repeat_n(kv, n)
        }))
    }
}
engine_fn!(impl[K: Key, V: Data] SampleByKeyFn<K, V>, (usize, BoxIter<(K, V)>) => BoxIter<(K, V)>);

#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct WithoutOtherSide<K: Key, V: Data, W: Data>(#[serde(skip)] Ph<(K, V, W)>);
impl<K: Key, V: Data, W: Data> WithoutOtherSide<K, V, W> {
    fn invoke(&self, ((k, (vs, ws)),): ((K, (Vec<V>, Vec<W>)),)) -> Vec<(K, V)> {
        if ws.is_empty() {
            vs.into_iter().map(|v| (k.clone(), v)).collect()
        } else {
            Vec::new()
        }
    }
}
engine_fn!(impl[K: Key, V: Data, W: Data] WithoutOtherSide<K, V, W>, ((K, (Vec<V>, Vec<W>)),) => Vec<(K, V)>);

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct LookupFn<K: Key>(K);
impl<K: Key, V: Data> PartitionFn<(K, V)> for LookupFn<K> {
    type Out = Vec<V>;
    fn apply(&self, it: BoxIter<(K, V)>, _: &TaskContext) -> Result<Vec<V>> {
        Ok(it.filter(|kv| kv.0 == self.0).map(|kv| kv.1).collect())
    }
}

// ---- pipe ---------------------------------------------------------------------------

/// Spark's PipedRDD: each partition's elements, one per line, go to the
/// standard input of a new process; its output lines are the partition. The
/// input is written to a local file first, so the child never blocks on a full
/// pipe while we wait for it, and memory stays bounded.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct PipedRdd<T: Data + std::fmt::Display> {
    pub(crate) id: usize,
    pub(crate) parent: Rdd<T>,
    pub(crate) command: Vec<String>,
}

impl<T: Data + std::fmt::Display> RddBase for PipedRdd<T> {
    fn id(&self) -> usize {
        self.id
    }
    fn name(&self) -> String {
        "PipedRDD".into()
    }
    fn num_partitions(&self) -> usize {
        self.parent.num_partitions()
    }
    fn dependencies(&self) -> Vec<Dependency> {
        vec![Dependency::Narrow(self.parent.base())]
    }
}

/// Kills and reaps the child if the task stops reading early (first
/// clearing the pid the kill watcher would signal).
struct Reaped(Child, std::sync::Arc<parking_lot::Mutex<Option<u32>>>);
impl Drop for Reaped {
    fn drop(&mut self) {
        *self.1.lock() = None;
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

impl<T: Data + std::fmt::Display> RddNode for PipedRdd<T> {
    type Item = String;
    fn compute(&self, split: usize, tc: &TaskContext) -> Result<BoxIter<String>> {
        let shown = self.command.join(" ");
        let input = tc.env.temp_file("pipe-input");
        // The parent's own errors (a lost shuffle is a FetchFailed) keep
        // their type, so the scheduler can recompute from lineage.
        let records = self.parent.iterator(split, tc)?;
        let write = || -> std::io::Result<()> {
            let mut w = BufWriter::new(std::fs::File::create(&input)?);
            for x in records {
                writeln!(w, "{x}")?;
            }
            w.flush()
        };
        let stdin = write()
            .and_then(|()| std::fs::File::open(&input))
            .map_err(|e| FlintError::io("cannot write the pipe's input", &input, e));
        let _ = std::fs::remove_file(&input);
        if let Some(e) = tc.take_error() {
            return Err(e);
        }
        if tc.is_killed() {
            return Err(FlintError::User(
                "task killed before its pipe command started".into(),
            ));
        }
        let mut cmd = Command::new(&self.command[0]);
        // SAFETY: the closure runs in the forked child before exec and only
        // calls prctl(PR_SET_PDEATHSIG), one async-signal-safe system call;
        // it allocates nothing. A piped program must not outlive the task's
        // process (a driver that exits while a killed task is still starting
        // its command would otherwise leave it running).
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
            });
        }
        let spawned = cmd
            .args(&self.command[1..])
            // The application's secrets are not the piped program's business.
            .env_remove("FLINT_APP_SECRET")
            .env_remove("FLINT_AUTHENTICATE_SECRET")
            // Nor its role: a piped program built with Flint is a driver of
            // its own, not this application's executor.
            .env_remove(crate::executor::ROLE_VAR)
            .env_remove("FLINT_DRIVER_URL")
            .env_remove("FLINT_EXECUTOR_ID")
            .env_remove("FLINT_EXECUTOR_CORES")
            .env_remove("FLINT_EXECUTOR_HOST")
            .env_remove("FLINT_RPC_MAX_MESSAGE_SIZE")
            .env_remove(crate::conf::SUBMIT_CONF_VAR)
            .stdin(Stdio::from(stdin?))
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| FlintError::User(format!("cannot run pipe command '{shown}': {e}")))?;
        // A killed task is blocked in `read` while the child is silent: a
        // watcher ends the child when the task's kill flag goes up. The pid is
        // cleared (under the lock) before the child is reaped, so the watcher
        // can never signal a reused pid.
        let live_pid = std::sync::Arc::new(parking_lot::Mutex::new(Some(spawned.id())));
        let child = Reaped(spawned, live_pid.clone());
        {
            let (killed, live_pid) = (tc.kill_flag(), live_pid.clone());
            std::thread::Builder::new()
                .name("flint-pipe-watch".into())
                .spawn(move || {
                    loop {
                        {
                            let pid = live_pid.lock();
                            let Some(p) = *pid else { return };
                            if killed.load(std::sync::atomic::Ordering::Relaxed) {
                                if let Ok(p) = i32::try_from(p) {
                                    let _ = nix::sys::signal::kill(
                                        nix::unistd::Pid::from_raw(p),
                                        nix::sys::signal::Signal::SIGKILL,
                                    );
                                }
                                return;
                            }
                        }
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                })
                .map_err(|e| FlintError::io("cannot start thread", "flint-pipe-watch", e))?;
        }
        let mut child = child;
        let stdout = child.0.stdout.take().ok_or_else(|| {
            FlintError::User(format!("pipe command '{shown}' has no standard output"))
        })?;
        let mut out = BufReader::new(stdout);
        let errors = tc.errors();
        let mut child = Some(child);
        let mut line = Vec::new();
        Ok(Box::new(std::iter::from_fn(move || {
            line.clear();
            // Lines are split on \n (a trailing \r dropped), and bytes that are
            // not UTF-8 are replaced, as a text reader would.
            match out.read_until(b'\n', &mut line) {
                Ok(0) => {}
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                    }
                    return Some(String::from_utf8_lossy(&line).into_owned());
                }
                Err(e) => {
                    errors.fail(FlintError::User(format!(
                        "reading the output of '{shown}': {e}"
                    )));
                    if let Some(c) = child.as_mut() {
                        let _ = c.0.kill();
                    }
                }
            }
            *live_pid.lock() = None;
            if let Some(mut c) = child.take() {
                match c.0.wait() {
                    Ok(st) if st.success() => {}
                    Ok(st) => errors.fail(FlintError::User(format!(
                        "Subprocess exited with status {}. Command ran: {shown}",
                        st.code()
                            .map_or_else(|| "killed by a signal".into(), |c| c.to_string())
                    ))),
                    Err(e) => {
                        errors.fail(FlintError::User(format!("cannot wait for '{shown}': {e}")))
                    }
                }
            }
            None
        })))
    }
    shippable!();
}

// ---- methods --------------------------------------------------------------------------

/// Spark's SamplingUtils.computeFractionForSampleSize: a fraction that yields
/// at least `num` of `total` elements with very high probability.
fn fraction_for_sample_size(num: u64, total: u64, with_replacement: bool) -> f64 {
    let f = num as f64 / total as f64;
    if with_replacement {
        let sd = if num < 12 { 9.0 } else { 5.0 };
        (f + sd * (f / total as f64).sqrt()).max(1e-10)
    } else {
        let gamma = -(1e-4f64).ln() / total as f64;
        (f + gamma + (gamma * gamma + 2.0 * gamma * f).sqrt()).clamp(1e-10, 1.0)
    }
}

impl<T: Data> Rdd<T> {
    /// Pairs each element with its index in the RDD's order (runs a job to
    /// count the partitions first, as Spark's `zipWithIndex`).
    pub fn zip_with_index(&self) -> Result<Rdd<(T, u64)>> {
        let n = self.num_partitions();
        let counts = if n > 1 {
            self.run_job(CountFn, Some((0..n - 1).collect()))?
        } else {
            Vec::new()
        };
        let mut starts = vec![0u64; n];
        for i in 1..n {
            starts[i] = starts[i - 1] + counts[i - 1];
        }
        Ok(self.map_partitions_with_index(IndexFrom {
            starts,
            _p: Default::default(),
        }))
    }

    /// Pairs each element with a unique id: the i-th element of partition k of
    /// n gets `i * n + k` (no job; ids have gaps).
    pub fn zip_with_unique_id(&self) -> Rdd<(T, u64)> {
        self.map_partitions_with_index(UniqueIds {
            n: self.num_partitions() as u64,
            _p: Default::default(),
        })
    }

    /// `aggregate` whose partial results are combined in a tree of `depth`
    /// levels on executors rather than all on the driver (Spark's
    /// `treeAggregate`; depth 2 is Spark's default).
    pub fn tree_aggregate<U: Data, S: Func<(U, T), Output = U>, C: Func<(U, U), Output = U>>(
        &self,
        zero: U,
        seq: S,
        comb: C,
        depth: usize,
    ) -> Result<U> {
        if depth < 1 {
            return Err(FlintError::InvalidArgument(format!(
                "tree_aggregate depth must be at least 1, not {depth}"
            )));
        }
        let mut partial = self.map_partitions_with_index(FoldPartition {
            zero: zero.clone(),
            seq,
            _p: Default::default(),
        });
        let mut n = partial.num_partitions();
        let scale = ((n as f64).powf(1.0 / depth as f64).ceil() as usize).max(2);
        while n > scale + n.div_ceil(scale) {
            n /= scale;
            partial = partial
                .map_partitions_with_index(ModIndex {
                    n,
                    _p: Default::default(),
                })
                .reduce_by_key_with(n, comb.clone())
                .values();
        }
        Ok(partial
            .collect()?
            .into_iter()
            .fold(zero, |a, b| comb.call((a, b))))
    }

    /// `reduce` combined in a tree (see `tree_aggregate`); an error when empty.
    pub fn tree_reduce<F: Func<(T, T), Output = T>>(&self, f: F, depth: usize) -> Result<T> {
        let parts = self
            .map_partitions_with_index(FoldPartition {
                zero: None,
                seq: ReduceOpt(f.clone(), Default::default()),
                _p: Default::default(),
            })
            .tree_aggregate(
                None,
                MergeOpt(f.clone(), Default::default()),
                MergeOpt(f, Default::default()),
                depth,
            )?;
        parts.ok_or_else(|| {
            FlintError::InvalidArgument("tree_reduce of an empty RDD (use tree_aggregate)".into())
        })
    }

    /// Splits the RDD randomly by `weights` (normalized to sum to 1); every
    /// element lands in exactly one split, the same one on every recomputation.
    pub fn random_split(&self, weights: &[f64], seed: u64) -> Result<Vec<Rdd<T>>> {
        let total: f64 = weights.iter().sum();
        // Written so NaN fails every test.
        let valid = |w: f64| w.is_finite() && w >= 0.0;
        if weights.is_empty()
            || !weights.iter().all(|w| valid(*w))
            || total.is_nan()
            || total <= 0.0
        {
            return Err(FlintError::InvalidArgument(format!(
                "random_split weights {weights:?} must be non-negative with a positive sum"
            )));
        }
        let mut lb = 0.0;
        Ok(weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let ub = if i + 1 == weights.len() {
                    1.0
                } else {
                    lb + w / total
                };
                let split = self.map_partitions_with_index(DrawIn {
                    lb,
                    ub,
                    seed,
                    _p: Default::default(),
                });
                lb = ub;
                split
            })
            .collect())
    }

    /// A random sample of exactly `num` elements (fewer if the RDD is smaller
    /// and sampling is without replacement), in random order (Spark's
    /// `takeSample`).
    pub fn take_sample(&self, with_replacement: bool, num: usize, seed: u64) -> Result<Vec<T>> {
        let mut rng = SplitMix64::new(seed);
        let shuffle = |v: &mut Vec<T>, rng: &mut SplitMix64| {
            for i in (1..v.len()).rev() {
                let j = (rng.next_u64() % (i as u64 + 1)) as usize;
                v.swap(i, j);
            }
        };
        if num == 0 {
            return Ok(Vec::new());
        }
        let total = self.count()?;
        if total == 0 {
            return Ok(Vec::new());
        }
        if !with_replacement && num as u64 >= total {
            let mut all = self.collect()?;
            shuffle(&mut all, &mut rng);
            return Ok(all);
        }
        let fraction = fraction_for_sample_size(num as u64, total, with_replacement);
        let mut round = 0u64;
        let mut sample = self.sample(with_replacement, fraction, seed)?.collect()?;
        while sample.len() < num {
            round += 1;
            if round > 100 {
                return Err(FlintError::InvalidArgument(format!(
                    "take_sample drew fewer than {num} elements in 100 passes; the RDD may have changed between passes"
                )));
            }
            tracing::warn!("take_sample needed another pass ({round}) to reach {num} elements");
            sample = self
                .sample(with_replacement, fraction, seed.wrapping_add(round))?
                .collect()?;
        }
        shuffle(&mut sample, &mut rng);
        sample.truncate(num);
        Ok(sample)
    }

    /// Pipes each partition through an external command (no shell: the first
    /// item is the program, the rest its arguments), element per line in and
    /// line per element out. A command that exits with an error fails the task.
    pub fn pipe(&self, command: &[&str]) -> Result<Rdd<String>>
    where
        T: std::fmt::Display,
    {
        if command.is_empty() || command[0].is_empty() {
            return Err(FlintError::InvalidArgument(
                "pipe needs a command to run".into(),
            ));
        }
        Ok(self.derive(PipedRdd {
            id: self.new_id(),
            parent: self.clone(),
            command: command.iter().map(|s| s.to_string()).collect(),
        }))
    }
}

impl<T: Data> Rdd<T> {
    /// Groups the elements by `f(element)` (Spark's `groupBy`).
    pub fn group_by<K: Key, F: Func<(T,), Output = K>>(&self, f: F) -> Rdd<(K, Vec<T>)> {
        self.key_by(f).group_by_key()
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct ReduceOpt<T: Data, F: Func<(T, T), Output = T>>(F, #[serde(skip)] Ph<T>);
impl<T: Data, F: Func<(T, T), Output = T>> ReduceOpt<T, F> {
    fn invoke(&self, (acc, x): (Option<T>, T)) -> Option<T> {
        Some(match acc {
            Some(a) => self.0.call((a, x)),
            None => x,
        })
    }
}
engine_fn!(impl[T: Data, F: Func<(T, T), Output = T>] ReduceOpt<T, F>, (Option<T>, T) => Option<T>);

#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct MergeOpt<T: Data, F: Func<(T, T), Output = T>>(F, #[serde(skip)] Ph<T>);
impl<T: Data, F: Func<(T, T), Output = T>> MergeOpt<T, F> {
    fn invoke(&self, (a, b): (Option<T>, Option<T>)) -> Option<T> {
        match (a, b) {
            (Some(a), Some(b)) => Some(self.0.call((a, b))),
            (a, b) => a.or(b),
        }
    }
}
engine_fn!(impl[T: Data, F: Func<(T, T), Output = T>] MergeOpt<T, F>, (Option<T>, Option<T>) => Option<T>);

impl<K: Key, V: Data> Rdd<(K, V)> {
    /// The values of `key`: reads only the partition the key belongs to when
    /// the RDD's partitioner is known.
    pub fn lookup(&self, key: &K) -> Result<Vec<V>> {
        let parts = self.partitioner().map(|p| vec![p.partition(key)]);
        Ok(self
            .run_job(LookupFn(key.clone()), parts)?
            .into_iter()
            .flatten()
            .collect())
    }

    /// The pairs as a map (a later value for a key replaces an earlier one).
    pub fn collect_as_map(&self) -> Result<HashMap<K, V>> {
        Ok(self.collect()?.into_iter().collect())
    }

    /// The pairs whose key does not occur in `other`.
    pub fn subtract_by_key<W: Data>(&self, other: &Rdd<(K, W)>) -> Rdd<(K, V)> {
        let p = self
            .partitioner()
            .unwrap_or(Partitioner::Hash(self.num_partitions().max(1)));
        self.cogroup_with(other, p)
            .flat_map_with(WithoutOtherSide(Default::default()), true)
    }

    /// Shuffles into `partitioner`'s partitions and sorts each by key in the
    /// shuffle (cheaper than repartitioning and sorting afterwards).
    pub fn repartition_and_sort_within_partitions(
        &self,
        partitioner: Partitioner<K>,
    ) -> Rdd<(K, V)> {
        self.shuffle(
            partitioner,
            NoAgg(Default::default()),
            Combine::None,
            Some(true),
        )
    }

    /// A sample with a fraction per key (every key of the RDD needs one):
    /// Bernoulli without replacement, Poisson with (Spark's `sampleByKey`; the
    /// sizes are approximate).
    pub fn sample_by_key(
        &self,
        with_replacement: bool,
        fractions: HashMap<K, f64>,
        seed: u64,
    ) -> Result<Rdd<(K, V)>> {
        if fractions
            .values()
            .any(|f| f.is_nan() || *f < 0.0 || (!with_replacement && *f > 1.0))
        {
            return Err(FlintError::InvalidArgument(
                "sample_by_key fractions must be in [0, 1] without replacement, or >= 0 with replacement"
                    .into(),
            ));
        }
        Ok(self.map_partitions_with_index(SampleByKeyFn {
            fractions,
            with_replacement,
            seed,
            _p: Default::default(),
        }))
    }
}
