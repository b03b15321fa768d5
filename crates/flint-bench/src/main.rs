//! Flint's benchmark harness.
//!
//! `flint-bench run` generates (or reuses) the datasets with the shared data
//! generator, runs Flint's examples and in-process micro benchmarks, each in its own
//! child process so its peak RSS is measured exactly, prints a table and writes
//! JSON. `--spark` adds Apache Spark's numbers (from a fresh `run.sh` with
//! `--spark-run`, else the reference `results.json`) and prints ratios.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use flint::prelude::*;
use serde::Serialize;

#[derive(Parser)]
#[command(name = "flint-bench")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the suite.
    Run {
        /// Small datasets (100 MiB text, 1M sort records) for a quick look.
        #[arg(long)]
        quick: bool,
        /// Compare with Apache Spark's numbers and print ratios.
        #[arg(long)]
        spark: bool,
        /// Run Spark's suite now (about 8 minutes) instead of reading the reference.
        #[arg(long)]
        spark_run: bool,
        /// Only these benchmarks (wordcount, baseline, alt, sort, standalone, latency, skew, throughput, cluster).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Where to write the JSON results.
        #[arg(long, default_value = "target/flint-bench.json")]
        json: PathBuf,
        /// Runs of WordCount and its baseline, alternating; medians are reported.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
    },
    /// Tiny-job latency: `parallelize(1..=100, 2).count()` N times in one context.
    Latency {
        #[arg(long, default_value_t = 200)]
        jobs: usize,
        #[arg(long, default_value = "local[2]")]
        master: String,
    },
    /// Task throughput: `parallelize(1M ints, P partitions).count()`.
    Throughput {
        #[arg(long, default_value_t = 10_000)]
        partitions: usize,
        #[arg(long, default_value_t = 5)]
        runs: usize,
        #[arg(long, default_value = "local[2]")]
        master: String,
    },
    /// Hot keys: groupByKey of N values on one key, reduceByKey of the same,
    /// and a join of one key with S values on each side (counted).
    Skew {
        #[arg(long, default_value_t = 1_600_000)]
        values: u64,
        #[arg(long, default_value_t = 20_000)]
        side: u32,
    },
    /// The README's WordCount closure alone, no engine: THREADS threads each
    /// read their share of FILE's lines and run
    /// `split_whitespace().map(str::to_owned).collect::<Vec<_>>()` on every
    /// line, dropping the words. What any engine running that code pays.
    ClosureFloor {
        file: PathBuf,
        #[arg(default_value_t = 2)]
        threads: usize,
    },
    /// Runs a command and prints its wall time and peak RSS as JSON (internal).
    Measure {
        #[arg(trailing_var_arg = true, required = true)]
        cmd: Vec<String>,
    },
}

#[derive(Serialize, Clone)]
struct Row {
    name: String,
    dataset: String,
    seconds: f64,
    peak_rss_mib: f64,
    detail: String,
    spark: Option<f64>,
}

fn main() -> anyhow::Result<()> {
    // On a cluster this binary is also its executors.
    flint::init();
    match Cli::parse().cmd {
        Cmd::Latency { jobs, master } => latency(jobs, &master),
        Cmd::Throughput {
            partitions,
            runs,
            master,
        } => throughput(partitions, runs, &master),
        Cmd::Measure { cmd } => measure(&cmd),
        Cmd::ClosureFloor { file, threads } => closure_floor(&file, threads),
        Cmd::Skew { values, side } => skew(values, side),
        Cmd::Run {
            quick,
            spark,
            spark_run,
            only,
            json,
            repeat,
        } => run(quick, spark, spark_run, &only, &json, repeat),
    }
}

/// The largest resident set among the executor processes, in MiB, read by
/// tasks while the executors are otherwise idle (cluster masters only).
fn executor_rss_mib(sc: &FlintContext) -> anyhow::Result<f64> {
    let per_task = sc
        .parallelize((0..8u32).collect::<Vec<_>>(), 8)
        .map(Fn!(|_x: u32| {
            std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("VmRSS:"))
                        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
                })
                .unwrap_or(0.0)
                / 1024.0
        }))
        .collect()?;
    Ok(per_task.into_iter().fold(0.0, f64::max))
}

fn latency(jobs: usize, master: &str) -> anyhow::Result<()> {
    let t_ctx = Instant::now();
    let sc = FlintContext::new(FlintConf::new().app_name("latency").master(master))?;
    let ctx_ms = ms(t_ctx.elapsed());
    let data: Vec<i32> = (1..=100).collect();
    let t0 = Instant::now();
    sc.parallelize(data.clone(), 2).count()?;
    let first = t0.elapsed();
    for _ in 0..5 {
        sc.parallelize(data.clone(), 2).count()?;
    }
    let mut times = Vec::with_capacity(jobs);
    for _ in 0..jobs {
        let t = Instant::now();
        let n = sc.parallelize(data.clone(), 2).count()?;
        times.push(t.elapsed());
        if n != 100 {
            bail!("count returned {n}, expected 100");
        }
    }
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    // The cost of shipping a task: encode a stage once, then open (build-id check,
    // offset resolution, deserialization) as every task does.
    let k = 3i64;
    let names = vec!["a".to_string(), "bb".to_string()];
    let rdd = sc
        .parallelize(data.clone(), 2)
        .map(Fn!(move |x: i32| x as i64 * k + names.len() as i64))
        .filter(Fn!(|x: &i64| x % 2 == 0));
    let t = Instant::now();
    let binary = rdd.stage_binary(flint::rdd::CollectFn)?;
    let encode = t.elapsed();
    let n = 20_000;
    let t = Instant::now();
    for _ in 0..n {
        let task: std::sync::Arc<dyn flint::task::StageTask> = binary.open()?;
        drop(task);
    }
    let open_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let exec_rss = if master.starts_with("flint://") {
        executor_rss_mib(&sc)?
    } else {
        0.0
    };
    println!(
        "{}",
        serde_json::json!({
            "median_ms": ms(pct(0.5)), "p99_ms": ms(pct(0.99)), "min_ms": ms(times[0]),
            "first_ms": ms(first), "jobs": jobs, "context_ms": ctx_ms,
            "executor_rss_mib": exec_rss,
            "stage_encode_us": encode.as_secs_f64() * 1e6, "task_open_us": open_us,
            "task_bytes": binary.payload.len(),
        })
    );
    Ok(())
}

fn throughput(partitions: usize, runs: usize, master: &str) -> anyhow::Result<()> {
    let sc = FlintContext::new(FlintConf::new().app_name("throughput").master(master))?;
    let data: Vec<i32> = (0..1_000_000).collect();
    let mut rates = Vec::new();
    let mut times = Vec::new();
    for _ in 0..runs {
        let rdd = sc.parallelize(data.clone(), partitions);
        let t = Instant::now();
        let n = rdd.count()?;
        let el = t.elapsed();
        if n != 1_000_000 {
            bail!("count returned {n}");
        }
        times.push(ms(el));
        rates.push(partitions as f64 / el.as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "{}",
        serde_json::json!({
            "median_tasks_per_s": rates[rates.len() / 2], "best_tasks_per_s": rates[rates.len() - 1],
            "job_ms": times, "partitions": partitions,
        })
    );
    Ok(())
}

/// The README's `flat_map` closure on one line; the number of words.
#[inline(never)]
fn readme_closure(line: &str) -> usize {
    let words = line
        .split_whitespace()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    std::hint::black_box(&words);
    words.len()
}

/// See `Cmd::ClosureFloor`. Each thread takes the lines that start in its
/// byte range (as text splits do), read in 1 MiB chunks; prints
/// `{"words": N}`.
fn closure_floor(file: &Path, threads: usize) -> anyhow::Result<()> {
    let (lines, words) = closure_words(file, threads, 1 << 20)?;
    println!("{{\"lines\": {lines}, \"words\": {words}}}");
    Ok(())
}

/// Lines and words of `file` as the README's closure sees them, `threads`
/// threads reading `chunk` bytes at a time.
fn closure_words(file: &Path, threads: usize, chunk: u64) -> anyhow::Result<(u64, usize)> {
    use std::io::{Read, Seek, SeekFrom};
    if !(1..=1024).contains(&threads) {
        bail!("closure-floor takes 1 to 1024 threads, not {threads}");
    }
    let len = std::fs::metadata(file)
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    let threads = threads as u64;
    fn text<'a>(file: &Path, b: &'a [u8], at: u64) -> anyhow::Result<&'a str> {
        std::str::from_utf8(b)
            .map_err(|e| anyhow::anyhow!("{} is not UTF-8 near byte {at}: {e}", file.display()))
    }
    let share = |t: u64| -> anyhow::Result<(u64, usize)> {
        let (start, end) = (len * t / threads, len * (t + 1) / threads);
        let mut f = std::fs::File::open(file)?;
        // A range's first line is the one after its first newline (the one
        // before belongs to the previous range), unless it starts the file.
        let from = start.saturating_sub(1);
        f.seek(SeekFrom::Start(from))?;
        // File offset of buf[0]; bytes of buf already searched for a newline.
        let mut pos = from;
        let mut searched = 0;
        let mut skip = start > 0;
        let mut buf: Vec<u8> = Vec::with_capacity(chunk as usize);
        let (mut lines, mut words) = (0u64, 0usize);
        loop {
            // Straight into buf's spare room: no second copy of the text.
            let n = (&mut f).take(chunk).read_to_end(&mut buf)?;
            let mut at = 0;
            while let Some(i) = memchr::memchr(b'\n', &buf[searched..]) {
                let nl = searched + i;
                let line_start = pos + at as u64;
                if skip {
                    skip = false;
                } else if line_start < end {
                    lines += 1;
                    words += readme_closure(text(file, &buf[at..nl], line_start)?);
                } else {
                    return Ok((lines, words));
                }
                at = nl + 1;
                searched = at;
            }
            pos += at as u64;
            buf.drain(..at);
            searched = buf.len();
            if n == 0 {
                // A last line without a newline.
                if !skip && pos < end && !buf.is_empty() {
                    lines += 1;
                    words += readme_closure(text(file, &buf, pos)?);
                }
                return Ok((lines, words));
            }
        }
    };
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads).map(|t| s.spawn(move || share(t))).collect();
        hs.into_iter().try_fold((0, 0), |(l, w), h| {
            let (hl, hw) = h
                .join()
                .map_err(|_| anyhow::anyhow!("a thread panicked"))??;
            Ok((l + hl, w + hw))
        })
    })
}

fn skew(values: u64, side: u32) -> anyhow::Result<()> {
    let sc = FlintContext::new(
        FlintConf::new()
            .app_name("skew")
            .master("local[2]")
            .set("flint.ui.showConsoleProgress", "false"),
    )?;
    let pairs = sc.parallelize((0..values).map(|i| (1u32, i)).collect::<Vec<_>>(), 4);
    let t = Instant::now();
    let groups = pairs.group_by_key().collect()?;
    let group_s = t.elapsed().as_secs_f64();
    if groups.len() != 1 || groups[0].1.len() as u64 != values {
        bail!("groupByKey lost values");
    }
    drop(groups);
    let t = Instant::now();
    let sums = pairs.reduce_by_key(Fn!(|a: u64, b: u64| a + b)).collect()?;
    let reduce_s = t.elapsed().as_secs_f64();
    if sums != vec![(1, values * (values - 1) / 2)] {
        bail!("reduceByKey: wrong sum");
    }
    let l = sc.parallelize((0..side).map(|i| (0u8, i)).collect::<Vec<_>>(), 2);
    let r = sc.parallelize((0..side).map(|i| (0u8, i)).collect::<Vec<_>>(), 2);
    let t = Instant::now();
    let n = l.join(&r).count()?;
    let join_s = t.elapsed().as_secs_f64();
    if n != side as u64 * side as u64 {
        bail!("join counted {n} pairs");
    }
    println!(
        "{}",
        serde_json::json!({
            "values": values, "group_by_key_s": group_s, "reduce_by_key_s": reduce_s,
            "join_side": side, "join_pairs": n, "join_count_s": join_s,
        })
    );
    Ok(())
}

fn secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.3} ms", s * 1000.0)
    } else {
        format!("{s:.2} s")
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn measure(cmd: &[String]) -> anyhow::Result<()> {
    let t = Instant::now();
    let out = Command::new(&cmd[0])
        .args(&cmd[1..])
        .output()
        .with_context(|| format!("starting {}", cmd[0]))?;
    let wall = t.elapsed();
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)?;
    let report = serde_json::json!({
        "wall_s": wall.as_secs_f64(),
        "max_rss_kib": usage.max_rss(),
        "status": out.status.code(),
        "stdout": String::from_utf8_lossy(&out.stdout),
        "stderr_tail": String::from_utf8_lossy(&out.stderr).chars().rev().take(2000).collect::<String>().chars().rev().collect::<String>(),
    });
    println!("{report}");
    Ok(())
}

/// Runs `cmd` under `flint-bench measure` (a fresh parent, so RUSAGE_CHILDREN is
/// exactly this command's peak RSS).
/// The median wall time of `(seconds, rss)` runs and the largest RSS.
fn median_run(runs: &[(f64, f64)]) -> (f64, f64) {
    let mut t: Vec<f64> = runs.iter().map(|r| r.0).collect();
    t.sort_by(f64::total_cmp);
    let rss = runs.iter().map(|r| r.1).fold(0.0, f64::max);
    (t[t.len() / 2], rss)
}

fn runs_note(runs: &[(f64, f64)]) -> String {
    if runs.len() < 2 {
        return String::new();
    }
    let all: Vec<String> = runs.iter().map(|r| format!("{:.2}", r.0)).collect();
    format!(
        "median of {} alternating runs: {} s",
        runs.len(),
        all.join(", ")
    )
}

fn measured(cmd: &[&str]) -> anyhow::Result<(f64, f64, String)> {
    let me = std::env::current_exe()?;
    let out = Command::new(me)
        .arg("measure")
        .arg("--")
        .args(cmd)
        .output()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "measuring {cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if v["status"].as_i64() != Some(0) {
        bail!("{cmd:?} failed: {}", v["stderr_tail"]);
    }
    Ok((
        v["wall_s"].as_f64().unwrap_or(0.0),
        v["max_rss_kib"].as_f64().unwrap_or(0.0) / 1024.0,
        v["stdout"].as_str().unwrap_or("").to_string(),
    ))
}

fn shared_bench() -> anyhow::Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/bench");
    root.canonicalize()
        .with_context(|| format!("the shared benchmark folder is not at {}", root.display()))
}

fn cache_dir() -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("FLINT_BENCH_CACHE") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/tmp".into()))
            .join(".cache/flint-bench"),
    };
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// DuckDB and Polars on the same file (`shared/bench/alt/run.sh`, which installs
/// them into a venv in the cache once): what a single-machine user might pick
/// instead. Their times are the scripts' own (query only, no interpreter start).
fn alt_section(
    rows: &mut Vec<Row>,
    text: &Path,
    text_name: &str,
    repeat: usize,
) -> anyhow::Result<()> {
    let script = shared_bench()?.join("alt/run.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(text)
        .arg(repeat.max(1).to_string())
        .env("FLINT_BENCH_CACHE", cache_dir()?)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let wc = rows
        .iter()
        .find(|r| r.name == "WordCount")
        .map(|r| r.seconds);
    let simple = rows
        .iter()
        .find(|r| r.name.starts_with("WordCount, the README's code"))
        .map(|r| r.seconds);
    for (tool, name) in [("duckdb", "DuckDB 2.0"), ("polars", "Polars 2.1")] {
        // Lines look like "duckdb distinct [(50000,)] 3.71 s".
        let runs: Vec<(f64, f64)> = stdout
            .lines()
            .filter(|l| l.starts_with(tool))
            .filter_map(|l| l.strip_suffix(" s")?.rsplit(' ').next()?.parse().ok())
            .map(|s| (s, 0.0))
            .collect();
        if runs.is_empty() {
            bail!(
                "no {tool} timings in the output of {}: {stdout}",
                script.display()
            );
        }
        let (s, _) = median_run(&runs);
        let mut detail = format!("query time, 2 threads; {}", runs_note(&runs));
        if let (Some(w), Some(n)) = (wc, simple) {
            detail = format!(
                "{tool} / tuned example {:.2}x, {tool} / README's code {:.2}x; {detail}",
                s / w,
                s / n
            );
        }
        rows.push(Row {
            name: format!("WordCount in {name} (what a user might pick instead)"),
            dataset: text_name.into(),
            seconds: s,
            peak_rss_mib: 0.0,
            detail,
            spark: None,
        });
    }
    Ok(())
}

/// Builds a shared tool (datagen, baseline) into the cache, never into shared/.
fn build_tool(name: &str, bin: &str) -> anyhow::Result<PathBuf> {
    let src = shared_bench()?.join(name);
    let target = cache_dir()?.join("tools-target");
    let status = Command::new("cargo")
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(src.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .status()?;
    if !status.success() {
        bail!("building {name} failed");
    }
    Ok(target.join("release").join(bin))
}

fn dataset(kind: &str, file: &str, size: &str) -> anyhow::Result<PathBuf> {
    let path = cache_dir()?.join(file);
    if !path.exists() {
        let generator = build_tool("datagen", "flint-datagen")?;
        eprintln!("generating {}", path.display());
        let tmp = path.with_extension("partial");
        let st = Command::new(generator)
            .args([kind, tmp.to_str().unwrap_or_default(), size, "42"])
            .status()?;
        if !st.success() {
            bail!("flint-datagen {kind} failed");
        }
        std::fs::rename(&tmp, &path)?;
    }
    Ok(path)
}

fn examples_dir() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let dir = me.parent().context("no parent dir")?.join("examples");
    if !dir.join("wordcount").exists() {
        bail!("examples are not built: run `cargo build --release --examples` first");
    }
    Ok(dir)
}

fn spark_reference(
    run_now: bool,
    standalone: bool,
    local: bool,
    quick: bool,
) -> anyhow::Result<serde_json::Value> {
    let spark = shared_bench()?.join("spark");
    let path = if run_now {
        // Tell run.sh where to put its results rather than guessing its default.
        let out = cache_dir()?.join("results");
        let st = Command::new("bash")
            .arg(spark.join("run.sh"))
            .env("SKIP_STANDALONE", if standalone { "0" } else { "1" })
            .env("SKIP_LOCAL", if local { "0" } else { "1" })
            .env("QUICK", if quick { "1" } else { "0" })
            .env("RESULTS_DIR", &out)
            .status()
            .context("cannot run Spark's run.sh (bash)")?;
        if !st.success() {
            bail!(
                "Spark's run.sh failed ({st}); its log is under the bench cache's run/ directory"
            );
        }
        out.join("results.json")
    } else {
        spark.join("results.json")
    };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

fn spark_metric(v: &serde_json::Value, label_has: &str, dataset: &str, field: &str) -> Option<f64> {
    v["runs"].as_array()?.iter().find_map(|r| {
        let label = r["label"].as_str()?;
        let ds = r["dataset"].as_str().unwrap_or("");
        (label.contains(label_has)
            && (dataset.is_empty() || ds == dataset)
            && r["mode"] == "local2")
            .then(|| r["result"][field].as_f64())
            .flatten()
    })
}

fn spark_metric_mode(v: &serde_json::Value, label: &str, field: &str) -> Option<f64> {
    v["runs"].as_array()?.iter().find_map(|r| {
        (r["label"] == label)
            .then(|| r["result"][field].as_f64())
            .flatten()
    })
}

/// Stops its processes by PID when dropped: SIGTERM, so that a master
/// removes its temporary binaries directory and a worker its work dirs (a
/// SIGKILL left a master's uploads in /tmp after every run), then SIGKILL
/// for any still running after 5 s.
struct Kill(Vec<std::process::Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        for c in &self.0 {
            if let Ok(pid) = i32::try_from(c.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for c in &mut self.0 {
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A master and two one-core workers started from the release `flint` binary
/// on ephemeral ports.
struct Standalone {
    procs: Kill,
    url: String,
    flint: PathBuf,
    /// Seconds from starting the master until both workers are ALIVE.
    alive_s: f64,
}

fn flint_cli() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let flint = me.parent().context("no parent")?.join("flint");
    if !flint.exists() {
        bail!(
            "{} is missing: run `cargo build --release -p flint-cli` first",
            flint.display()
        );
    }
    Ok(flint)
}

fn start_standalone(name: &str) -> anyhow::Result<Standalone> {
    use std::io::{BufRead, Read, Write};
    let flint = flint_cli()?;
    let dir = cache_dir()?.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut procs = Kill(Vec::new());
    let banner = |c: &mut std::process::Child| -> anyhow::Result<String> {
        let out = c.stdout.take().context("stdout")?;
        let mut r = std::io::BufReader::new(out);
        let mut line = String::new();
        r.read_line(&mut line)?;
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = r.read_to_end(&mut sink);
        });
        Ok(line)
    };
    let t0 = Instant::now();
    let mut m = Command::new(&flint)
        .args(["master", "--port", "0", "--webui-port", "0"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let line = banner(&mut m)?;
    procs.0.push(m);
    let url = line
        .split_whitespace()
        .nth(4)
        .context("master banner")?
        .to_string();
    let web: u16 = line
        .trim()
        .trim_end_matches(')')
        .rsplit(':')
        .next()
        .context("banner")?
        .parse()?;
    for i in 0..2 {
        let mut w = Command::new(&flint)
            .args([
                "worker",
                &url,
                "--port",
                "0",
                "--webui-port",
                "0",
                "--cores",
                "1",
                "--memory",
                "1g",
            ])
            .arg("--work-dir")
            .arg(dir.join(format!("w{i}")))
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        banner(&mut w)?;
        procs.0.push(w);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", web))?;
        s.write_all(b"GET /json HTTP/1.0\r\n\r\n")?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        if body.contains("\"aliveworkers\":2") {
            break;
        }
        if Instant::now() > deadline {
            bail!("workers did not become ALIVE");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(Standalone {
        procs,
        url,
        flint,
        alive_s: t0.elapsed().as_secs_f64(),
    })
}

/// Starts a master and two workers (release binaries, ephemeral ports), returns
/// seconds until both are ALIVE and the idle RSS (MiB) of the three daemons.
fn standalone() -> anyhow::Result<(f64, Vec<f64>)> {
    let sa = start_standalone("standalone")?;
    std::thread::sleep(Duration::from_secs(2));
    let rss = sa.procs.0.iter().map(|c| rss_mib(c.id())).collect();
    Ok((sa.alive_s, rss))
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// The cluster section: the same jobs through a standalone master and two
/// one-core workers, against `local[2]` in the same run.
#[allow(clippy::too_many_arguments)]
fn cluster_section(
    rows: &mut Vec<Row>,
    ex: &Path,
    text: &Path,
    text_name: &str,
    sort: &Path,
    sort_name: &str,
    repeat: usize,
    spark_ref: Option<&serde_json::Value>,
) -> anyhow::Result<()> {
    let sa = start_standalone("cluster")?;
    let me = std::env::current_exe()?;
    let me = me.to_str().unwrap_or_default();
    let url = sa.url.as_str();
    let sa_metric =
        |label: &str, field: &str| spark_ref.and_then(|r| spark_metric_mode(r, label, field));
    let (_, rss, out) = measured(&[me, "latency", "--master", url])?;
    let v: serde_json::Value = serde_json::from_str(out.trim())?;
    rows.push(Row {
        name: "cluster: tiny job median (200 x parallelize(1..=100,2).count())".into(),
        dataset: "-".into(),
        seconds: v["median_ms"].as_f64().unwrap_or(0.0) / 1000.0,
        peak_rss_mib: rss,
        detail: format!(
            "p99 {:.3} ms; context with 2 executors ready in {:.0} ms; executor RSS {:.1} MiB",
            v["p99_ms"].as_f64().unwrap_or(0.0),
            v["context_ms"].as_f64().unwrap_or(0.0),
            v["executor_rss_mib"].as_f64().unwrap_or(0.0),
        ),
        spark: sa_metric("tiny_jobs_sa", "median_ms").map(|m| m / 1000.0),
    });
    let (_, rss, out) = measured(&[me, "throughput", "--master", url])?;
    let v: serde_json::Value = serde_json::from_str(out.trim())?;
    let rate = v["median_tasks_per_s"].as_f64().unwrap_or(0.0);
    rows.push(Row {
        name: "cluster: task throughput, 10,000-partition count (s per 10k tasks)".into(),
        dataset: "-".into(),
        seconds: 10_000.0 / rate.max(1e-9),
        peak_rss_mib: rss,
        detail: format!("{rate:.0} tasks/s"),
        spark: None,
    });
    // The same job on the cluster and in local[2], alternating; medians.
    let mut pair =
        |name: &str, dataset: &str, cmd: &[String], spark: Option<f64>| -> anyhow::Result<()> {
            let (mut on_cluster, mut local) = (Vec::new(), Vec::new());
            for _ in 0..repeat.max(1) {
                for (master, runs) in [(url, &mut on_cluster), ("local[2]", &mut local)] {
                    let mut c: Vec<String> = cmd.to_vec();
                    c.push(format!("--master={master}"));
                    let refs: Vec<&str> = c.iter().map(String::as_str).collect();
                    let (s, rss, _) = measured(&refs)?;
                    runs.push((s, rss));
                }
            }
            let (s, rss) = median_run(&on_cluster);
            let (l, _) = median_run(&local);
            rows.push(Row {
                name: format!("cluster: {name}"),
                dataset: dataset.into(),
                seconds: s,
                peak_rss_mib: rss,
                detail: format!(
                    "local[2] {} (cluster / local {:.2}x, medians); {}",
                    secs(l),
                    s / l,
                    runs_note(&on_cluster)
                ),
                spark,
            });
            Ok(())
        };
    let s = |p: &Path| p.to_str().unwrap_or_default().to_string();
    pair(
        "WordCount (wordcount example, whole process)",
        text_name,
        &[s(&ex.join("wordcount")), s(text)],
        // Spark's standalone WordCount is measured on 100 MiB only.
        sa_metric("wc_rdd_100m_sa", "count_job_ms")
            .filter(|_| text_name == "text-100MiB")
            .map(|m| m / 1000.0),
    )?;
    let out_dir = cache_dir()?.join("sort-out-cluster");
    let _ = std::fs::remove_dir_all(&out_dir);
    // sort refuses an existing output directory: a fresh one per run.
    let sort_cmd = [
        "/bin/sh".to_string(),
        "-c".to_string(),
        format!(
            "rm -rf {o} && exec {b} {i} {o} --executor-memory=512m \"$@\"",
            o = s(&out_dir),
            b = s(&ex.join("sort")),
            i = s(sort)
        ),
        "sort".to_string(),
    ];
    pair("Sort (sort example, 512m)", sort_name, &sort_cmd, None)?;
    let _ = std::fs::remove_dir_all(&out_dir);
    // Cluster deploy mode: submit to FINISHED (Spark's one_count_sa_cluster).
    let t = Instant::now();
    let st = Command::new(&sa.flint)
        .args([
            "submit",
            "--master",
            url,
            "--deploy-mode",
            "cluster",
            "--driver-memory",
            "256m",
            "--executor-memory",
            "256m",
            "--conf",
            "flint.standalone.submit.waitAppCompletion=true",
        ])
        .arg(ex.join("pi"))
        .arg("1")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .status()?;
    let hello = t.elapsed().as_secs_f64();
    if !st.success() {
        bail!("cluster-mode submission of pi failed: {st}");
    }
    rows.push(Row {
        name: "cluster deploy mode: flint submit of pi to FINISHED".into(),
        dataset: "-".into(),
        seconds: hello,
        peak_rss_mib: 0.0,
        detail: format!(
            "daemon RSS after the jobs: master {:.1}, workers {:.1} / {:.1} MiB",
            rss_mib(sa.procs.0[0].id()),
            rss_mib(sa.procs.0[1].id()),
            rss_mib(sa.procs.0[2].id())
        ),
        // Spark's is the wall time of its spark-submit, as here.
        spark: spark_ref.and_then(|r| {
            r["runs"].as_array()?.iter().find_map(|x| {
                (x["label"] == "one_count_sa_cluster")
                    .then(|| x["wall_ms"].as_f64().map(|m| m / 1000.0))
                    .flatten()
            })
        }),
    });
    drop(sa);
    Ok(())
}

fn run(
    quick: bool,
    spark: bool,
    spark_run: bool,
    only: &[String],
    json: &Path,
    repeat: usize,
) -> anyhow::Result<()> {
    let want = |n: &str| only.is_empty() || only.iter().any(|o| o == n);
    let ex = examples_dir()?;
    // This binary, for the benchmarks it runs as a child of itself.
    let me = std::env::current_exe()?;
    let me = me.to_str().unwrap_or_default();
    // Running Spark now implies comparing with it.
    let spark_ref = if spark || spark_run {
        let local = only.is_empty() || only.iter().any(|o| o != "cluster");
        Some(spark_reference(spark_run, want("cluster"), local, quick)?)
    } else {
        None
    };
    let (text_name, text_bytes, sort_name, sort_n) = if quick {
        ("text-100MiB", "104857600", "sort-1M-100MB", "1000000")
    } else {
        ("text-1GiB", "1073741824", "sort-10M-1GB", "10000000")
    };
    let mut rows: Vec<Row> = Vec::new();
    let local = "--master=local[2]";
    if want("wordcount") || want("baseline") {
        let text = dataset("text", &format!("{text_name}.txt"), text_bytes)?;
        let text_s = text.to_str().unwrap_or_default();
        let wc_bin = ex.join("wordcount");
        let wc = [wc_bin.to_str().unwrap_or_default(), text_s, local];
        // The README's code (String words, a Vec per line), as users write it.
        let simple_bin = ex.join("wordcount_simple");
        let simple = [simple_bin.to_str().unwrap_or_default(), text_s, local];
        let base_bin = if want("baseline") {
            Some(build_tool("baseline", "wc-baseline")?)
        } else {
            None
        };
        let base = base_bin
            .as_ref()
            .map(|b| [b.to_str().unwrap_or_default(), text_s, "2", "flat"]);
        // `stream`: the tuned physical bound (chunked positioned reads, SIMD
        // tokenizer, inline-key table).
        let stream = base_bin
            .as_ref()
            .map(|b| [b.to_str().unwrap_or_default(), text_s, "2", "stream"]);
        // This machine's speed drifts by tens of percent over minutes, so the
        // runs alternate, `repeat` times each, and the medians are reported.
        let (mut wc_runs, mut base_runs, mut simple_runs) = (Vec::new(), Vec::new(), Vec::new());
        let mut stream_runs = Vec::new();
        // The README's closure with no engine around it: the part of the
        // README's code no engine can remove.
        let floor = [me, "closure-floor", text_s, "2"];
        let mut floor_runs = Vec::new();
        let mut distinct = String::new();
        for _ in 0..repeat.max(1) {
            if want("wordcount") {
                let (s, rss, out) = measured(&wc)?;
                distinct = out.lines().last().unwrap_or("").to_string();
                wc_runs.push((s, rss));
                let (s, rss, out2) = measured(&simple)?;
                if out2 != out {
                    bail!("wordcount_simple and wordcount disagree");
                }
                simple_runs.push((s, rss));
                let (s, rss, _) = measured(&floor)?;
                floor_runs.push((s, rss));
            }
            if let Some(cmd) = &base {
                let (s, rss, _) = measured(cmd)?;
                base_runs.push((s, rss));
            }
            if let Some(cmd) = &stream {
                let (s, rss, _) = measured(cmd)?;
                stream_runs.push((s, rss));
            }
        }
        if !wc_runs.is_empty() {
            let sp = spark_ref
                .as_ref()
                .and_then(|v| spark_metric(v, "wc_rdd", text_name, "count_job_ms"))
                .map(|m| m / 1000.0);
            let (s, rss) = median_run(&wc_runs);
            rows.push(Row {
                name: "WordCount".into(),
                dataset: text_name.into(),
                seconds: s,
                peak_rss_mib: rss,
                detail: format!("{distinct}; {}", runs_note(&wc_runs)),
                spark: sp,
            });
            let (ss, srss) = median_run(&simple_runs);
            rows.push(Row {
                name: "WordCount, the README's code (String words, split_whitespace)".into(),
                dataset: text_name.into(),
                seconds: ss,
                peak_rss_mib: srss,
                detail: format!(
                    "{:.2}x the tuned example (medians); {}",
                    ss / s,
                    runs_note(&simple_runs)
                ),
                spark: sp,
            });
            let (fs, frss) = median_run(&floor_runs);
            rows.push(Row {
                name: "the README's closure alone, no engine (read lines, split_whitespace, to_owned, collect, drop; 2 threads)".into(),
                dataset: text_name.into(),
                seconds: fs,
                peak_rss_mib: frss,
                detail: format!(
                    "{:.2}x the tuned example's whole job; the README's code spends {:.2} s beyond it (medians); {}",
                    fs / s,
                    ss - fs,
                    runs_note(&floor_runs)
                ),
                spark: None,
            });
        }
        if !base_runs.is_empty() {
            let (s, rss) = median_run(&base_runs);
            let mut detail = runs_note(&base_runs);
            if !wc_runs.is_empty() {
                detail = format!(
                    "Flint / baseline {:.2}x (medians); {detail}",
                    median_run(&wc_runs).0 / s
                );
            }
            rows.push(Row {
                name: "WordCount hand-written baseline (2 threads, flat)".into(),
                dataset: text_name.into(),
                seconds: s,
                peak_rss_mib: rss,
                detail,
                spark: None,
            });
        }
        if !stream_runs.is_empty() {
            let (s, rss) = median_run(&stream_runs);
            let mut detail = runs_note(&stream_runs);
            if !wc_runs.is_empty() {
                detail = format!(
                    "tuned example / stream {:.2}x, README's code / stream {:.2}x (medians); {detail}",
                    median_run(&wc_runs).0 / s,
                    median_run(&simple_runs).0 / s
                );
            }
            rows.push(Row {
                name: "WordCount hand-written bound (2 threads, stream)".into(),
                dataset: text_name.into(),
                seconds: s,
                peak_rss_mib: rss,
                detail,
                spark: None,
            });
        }
    }
    if want("alt") {
        let text = dataset("text", &format!("{text_name}.txt"), text_bytes)?;
        alt_section(&mut rows, &text, text_name, repeat)?;
    }
    if want("sort") {
        let data = dataset("sort", &format!("{sort_name}.bin"), sort_n)?;
        let out_dir = cache_dir()?.join("sort-out");
        let sp = spark_ref
            .as_ref()
            .and_then(|v| spark_metric(v, "sort_", sort_name, "job_ms"))
            .map(|m| m / 1000.0);
        // Spark's reference run sorts into as many partitions as input splits;
        // two output partitions make each reducer exceed its memory share, so
        // that variant measures spilling. The first variant alternates with
        // the physical bound (page cache as hot for both); medians.
        let baseline = if want("baseline") {
            Some(build_tool("baseline", "sort-baseline")?)
        } else {
            None
        };
        let run_in = |cmd: &[String]| -> anyhow::Result<(f64, f64)> {
            let _ = std::fs::remove_dir_all(&out_dir);
            let refs: Vec<&str> = cmd.iter().map(String::as_str).collect();
            let (s, rss, _) = measured(&refs)?;
            let _ = std::fs::remove_dir_all(&out_dir);
            Ok((s, rss))
        };
        let path = |p: &Path| p.to_str().unwrap_or_default().to_string();
        let sort_cmd = |example: &str, extra: Option<&str>| {
            let mut cmd = vec![
                path(&ex.join(example)),
                path(&data),
                path(&out_dir),
                local.to_string(),
                "--executor-memory=512m".to_string(),
            ];
            cmd.extend(extra.map(str::to_string));
            cmd
        };
        // The tuned example, the bound and the key a user writes (the
        // record's first 10 bytes, `sort_simple`) alternate.
        let (mut base_runs, mut main_runs, mut simple_runs) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..repeat.max(1) {
            main_runs.push(run_in(&sort_cmd("sort", None))?);
            if let Some(bin) = &baseline {
                let b = [
                    path(bin),
                    path(&data),
                    path(&out_dir),
                    "2".into(),
                    "30".into(),
                ];
                base_runs.push(run_in(&b)?);
            }
            simple_runs.push(run_in(&sort_cmd("sort_simple", None))?);
        }
        let spilled = [run_in(&sort_cmd("sort", Some("--partitions=2")))?];
        let main_median = median_run(&main_runs).0;
        for (label, runs, simple) in [
            (
                "Sort, executor memory 512m (partitions as Spark: one per split)",
                &main_runs[..],
                false,
            ),
            (
                "Sort, the key a user writes (sort_simple: the first 10 bytes as Bytes), 512m",
                &simple_runs[..],
                true,
            ),
            (
                "Sort, executor memory 512m, 2 output partitions (spills)",
                &spilled[..],
                false,
            ),
        ] {
            let (s, rss) = median_run(runs);
            let mut detail = runs_note(runs);
            if simple {
                detail = format!(
                    "{:.2}x the tuned example (medians, alternating); {detail}",
                    s / main_median
                );
            }
            rows.push(Row {
                name: label.into(),
                dataset: sort_name.into(),
                seconds: s,
                peak_rss_mib: rss,
                detail,
                spark: sp,
            });
        }
        if !base_runs.is_empty() {
            let (s, rss) = median_run(&base_runs);
            rows.push(Row {
                name: "Sort hand-written bound (sort-baseline, 2 threads, 30 parts)".into(),
                dataset: sort_name.into(),
                seconds: s,
                peak_rss_mib: rss,
                detail: format!(
                    "Flint / sort-baseline {:.2}x (medians); {}",
                    main_median / s,
                    runs_note(&base_runs)
                ),
                spark: None,
            });
        }
    }
    if want("standalone") {
        let (alive, rss) = standalone()?;
        let sp = spark_ref
            .as_ref()
            .and_then(|r| spark_metric_mode(r, "sa_startup", "total_ms"))
            .map(|m| m / 1000.0);
        rows.push(Row {
            name: "standalone master + 2 workers, start to all ALIVE".into(),
            dataset: "-".into(),
            seconds: alive,
            peak_rss_mib: rss.iter().copied().fold(0.0, f64::max),
            detail: format!(
                "idle RSS master {:.1} MiB, workers {:.1} / {:.1} MiB (Spark: 231 / 229 MiB, 1 worker)",
                rss[0], rss[1], rss[2]
            ),
            spark: sp,
        });
    }
    if want("latency") {
        let (_, rss, out) = measured(&[me, "latency"])?;
        let v: serde_json::Value = serde_json::from_str(out.trim())?;
        let sp = spark_ref
            .as_ref()
            .and_then(|r| spark_metric(r, "tiny_jobs", "", "median_ms"))
            .map(|m| m / 1000.0);
        rows.push(Row {
            name: "tiny job median (200 x parallelize(1..=100,2).count())".into(),
            dataset: "-".into(),
            seconds: v["median_ms"].as_f64().unwrap_or(0.0) / 1000.0,
            peak_rss_mib: rss,
            detail: format!(
                "p99 {:.3} ms, first {:.2} ms; task ship: encode {:.1} us/stage, open {:.2} us/task, {} B",
                v["p99_ms"].as_f64().unwrap_or(0.0),
                v["first_ms"].as_f64().unwrap_or(0.0),
                v["stage_encode_us"].as_f64().unwrap_or(0.0),
                v["task_open_us"].as_f64().unwrap_or(0.0),
                v["task_bytes"].as_u64().unwrap_or(0),
            ),
            spark: sp,
        });
    }
    if want("skew") {
        let (_, rss, out) = measured(&[me, "skew"])?;
        let v: serde_json::Value = serde_json::from_str(out.trim())?;
        let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
        rows.push(Row {
            name: "hot key: groupByKey of 1.6M values on one key".into(),
            dataset: "-".into(),
            seconds: f("group_by_key_s"),
            peak_rss_mib: rss,
            detail: format!(
                "same data reduceByKey {:.3} s; join of one key, 20k x 20k = 400M pairs counted in {:.1} s",
                f("reduce_by_key_s"),
                f("join_count_s")
            ),
            spark: None,
        });
    }
    if want("throughput") {
        let (_, rss, out) = measured(&[me, "throughput"])?;
        let v: serde_json::Value = serde_json::from_str(out.trim())?;
        let rate = v["median_tasks_per_s"].as_f64().unwrap_or(0.0);
        let sp = spark_ref
            .as_ref()
            .and_then(|r| spark_metric(r, "task_tput", "", "median_tasks_per_s"));
        rows.push(Row {
            name: "task throughput, 10,000-partition count (s per 10k tasks)".into(),
            dataset: "-".into(),
            seconds: 10_000.0 / rate.max(1e-9),
            peak_rss_mib: rss,
            detail: format!("{rate:.0} tasks/s"),
            spark: sp.map(|r| 10_000.0 / r),
        });
    }
    if want("cluster") {
        let text = dataset("text", &format!("{text_name}.txt"), text_bytes)?;
        let sort = dataset("sort", &format!("{sort_name}.bin"), sort_n)?;
        cluster_section(
            &mut rows,
            &ex,
            &text,
            text_name,
            &sort,
            sort_name,
            repeat,
            spark_ref.as_ref(),
        )?;
    }
    println!("| benchmark | dataset | Flint | peak RSS | Spark | Spark / Flint | notes |");
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        let (sp, ratio) = match r.spark {
            Some(s) => (secs(s), format!("{:.1}x", s / r.seconds)),
            None => ("-".into(), "-".into()),
        };
        // Tools timed from their own output have no measured RSS.
        let rss = if r.peak_rss_mib > 0.0 {
            format!("{:.0} MiB", r.peak_rss_mib)
        } else {
            "-".into()
        };
        println!(
            "| {} | {} | {} | {rss} | {sp} | {ratio} | {} |",
            r.name,
            r.dataset,
            secs(r.seconds),
            r.detail
        );
    }
    if let Some(p) = json.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::write(json, serde_json::to_string_pretty(&rows)?)?;
    eprintln!("wrote {}", json.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Every line is counted by exactly one thread, whatever the number of
    /// threads, the read size and wherever the ranges cut: empty lines, CRLF,
    /// a range starting just after a newline, lines longer than a read, a
    /// last line without a newline, files shorter than the thread count.
    #[test]
    fn the_closure_floor_sees_every_line_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("text.txt");
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for case in 0..250 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 48) as usize;
            let text: Vec<u8> = (0..len)
                .map(|i| b"ab \n\r\t"[((x >> (i % 58)) as usize + i * 7) % 6])
                .collect();
            std::fs::write(&file, &text).unwrap();
            let text = String::from_utf8(text).unwrap();
            let want_lines = text.split_terminator('\n').count() as u64;
            let want_words = text.split_whitespace().count();
            for threads in [1, 2, 3, 5, 8, 50] {
                for chunk in [1, 2, 3, 7, 1 << 20] {
                    let got = super::closure_words(&file, threads, chunk).unwrap();
                    assert_eq!(
                        got,
                        (want_lines, want_words),
                        "case {case} {text:?}, {threads} threads, {chunk}-byte reads"
                    );
                }
            }
        }
        std::fs::write(&file, b"ok\n\xff\n").unwrap();
        let e = super::closure_words(&file, 2, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("not UTF-8"), "{e}");
    }
}
