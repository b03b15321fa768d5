//! Every example (wordcount, sort, pi, pagerank) gives the same output in
//! `local[2]`, on `local-cluster[2,1,1024]`, and on a standalone cluster (a
//! Master and two Workers in this process; drivers and executors are real
//! processes: the example binaries) in client and in cluster deploy mode.
//! The examples are built with the tests (`cargo test` builds them).

use std::path::{Path, PathBuf};
use std::process::Command;

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: build the examples (cargo test builds them)",
        p.display()
    );
    p
}

/// One example run: its arguments, and where its answer is (stdout, or the
/// files of an output directory its arguments name).
struct Case {
    name: &'static str,
    args: Vec<String>,
    out_dir: Option<PathBuf>,
}

/// The answer of a finished run: stdout, or the output files in name order.
fn answer(case: &Case, stdout: &[u8]) -> Vec<u8> {
    match &case.out_dir {
        None => stdout.to_vec(),
        Some(d) => {
            let mut parts: Vec<PathBuf> = std::fs::read_dir(d)
                .unwrap_or_else(|e| panic!("{}: no output in {}: {e}", case.name, d.display()))
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with("part-")
                })
                .collect();
            parts.sort();
            parts
                .iter()
                .flat_map(|p| std::fs::read(p).unwrap())
                .collect()
        }
    }
}

/// The last lines of every executor's and driver's stderr under `work`, for
/// failure messages.
fn logs_under(work: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![work.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "stderr") {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(6).collect();
                out.push_str(&format!("== {}\n", p.display()));
                for l in tail.iter().rev() {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
    }
    out
}

fn run_direct(case: &Case, env: &[(&str, String)], extra: &[&str], work: &Path) -> Vec<u8> {
    let out = Command::new(example(case.name))
        .args(&case.args)
        .args(extra)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} failed: {}\n{}",
        case.name,
        String::from_utf8_lossy(&out.stderr),
        logs_under(work)
    );
    // A job that went well logs no warning: users take one for trouble (a
    // context's stop once cut its executors' connections and warned).
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains(" WARN ") && !stderr.contains(" ERROR "),
        "{} {extra:?} succeeded but warned:\n{stderr}",
        case.name
    );
    answer(case, &out.stdout)
}

fn driver_dirs(work: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(work)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|w| std::fs::read_dir(w.path()).into_iter().flatten().flatten())
        .map(|d| d.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("driver-")
        })
        .collect();
    v.sort();
    v
}

/// Submitted in cluster deploy mode: a Worker runs the driver; its stdout
/// stays in the driver's directory there.
fn run_cluster_mode(case: &Case, url: &str, work: &Path) -> Vec<u8> {
    let before = driver_dirs(work);
    let bin = example(case.name);
    let mut args: Vec<String> = [
        "--deploy-mode",
        "cluster",
        "--master",
        url,
        "--driver-memory",
        "512m",
        "--executor-memory",
        "512m",
        "--conf",
        "flint.standalone.submit.waitAppCompletion=true",
        bin.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(case.args.iter().cloned());
    let code = flint::submit::main(args).unwrap();
    let new: Vec<PathBuf> = driver_dirs(work)
        .into_iter()
        .filter(|d| !before.contains(d))
        .collect();
    assert_eq!(new.len(), 1, "{}: one new driver dir: {new:?}", case.name);
    assert_eq!(
        code,
        0,
        "{}: the driver did not finish: {}",
        case.name,
        std::fs::read_to_string(new[0].join("stderr")).unwrap_or_default()
    );
    answer(case, &std::fs::read(new[0].join("stdout")).unwrap())
}

/// 100-byte records with random 10-byte keys (a fixed-seed generator).
fn sort_input(path: &Path, n: usize) {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut data = Vec::with_capacity(n * 100);
    for i in 0..n {
        for _ in 0..10 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.push(b' ' + (x % 95) as u8);
        }
        let rest = format!("{i:>88}\r\n");
        data.extend_from_slice(rest.as_bytes());
    }
    std::fs::write(path, data).unwrap();
}

#[test]
fn every_example_gives_the_same_output_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let sample = root.join("data/sample.txt").canonicalize().unwrap();
    let links = root.join("data/links.txt").canonicalize().unwrap();
    let records = dir.path().join("records");
    sort_input(&records, 20_000);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    // A fresh output directory per run of sort.
    let sort_case = |name: &'static str, tag: &str| {
        let out = dir.path().join(format!("{name}-{tag}"));
        Case {
            name,
            args: vec![s(&records), s(&out)],
            out_dir: Some(out),
        }
    };
    let stdout_cases = || {
        vec![
            Case {
                name: "wordcount",
                args: vec![s(&sample)],
                out_dir: None,
            },
            Case {
                name: "pi",
                args: vec!["4".into()],
                out_dir: None,
            },
            Case {
                name: "pagerank",
                args: vec![s(&links), "10".into()],
                out_dir: None,
            },
        ]
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let work = dir.path().join("cluster");
    let cluster = rt
        .block_on(flint_deploy::LocalCluster::start(2, 2, 2048, &work))
        .unwrap();
    let url = format!("flint://{}", cluster.master.address);
    let client_env = [(
        "FLINT_SUBMIT_CONF",
        format!("flint.master={url}\nflint.executor.memory=512m\n"),
    )];
    let mut cases: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
    for (i, tag) in ["local", "local-cluster", "client", "cluster"]
        .iter()
        .enumerate()
    {
        let mut all = stdout_cases();
        all.push(sort_case("sort", tag));
        // The key a user writes (its first 10 bytes), kept encoded by the sorter.
        all.push(sort_case("sort_simple", tag));
        for case in all {
            let got = match i {
                0 => run_direct(&case, &[], &["--master", "local[2]"], &work),
                1 => run_direct(&case, &[], &["--master", "local-cluster[2,1,1024]"], &work),
                2 => run_direct(&case, &client_env, &[], &work),
                _ => run_cluster_mode(&case, &url, &work),
            };
            match cases.iter_mut().find(|(n, _)| n == case.name) {
                Some((_, v)) => v.push(got),
                None => cases.push((case.name.to_string(), vec![got])),
            }
        }
    }
    rt.block_on(cluster.stop());
    for (name, answers) in &cases {
        assert!(!answers[0].is_empty(), "{name} printed nothing");
        for (mode, a) in ["local-cluster", "client", "cluster"]
            .iter()
            .zip(&answers[1..])
        {
            assert!(
                a == &answers[0],
                "{name} differs in {mode} mode from local[2]:\n{}\n--- vs ---\n{}",
                String::from_utf8_lossy(&a[..a.len().min(2000)]),
                String::from_utf8_lossy(&answers[0][..answers[0].len().min(2000)])
            );
        }
    }
    // The sorted output really is the input, sorted.
    let sorted = &cases.iter().find(|(n, _)| n == "sort").unwrap().1[0];
    let input = std::fs::read(&records).unwrap();
    let mut want: Vec<&[u8]> = input.chunks(100).collect();
    want.sort_by(|a, b| a[..10].cmp(&b[..10]));
    let got: Vec<&[u8]> = sorted.chunks(100).collect();
    assert_eq!(got.len(), want.len());
    assert!(got.iter().zip(&want).all(|(g, w)| g[..10] == w[..10]));
    let simple = &cases.iter().find(|(n, _)| n == "sort_simple").unwrap().1[0];
    assert!(simple == sorted, "sort_simple and sort disagree");
    // The word counts are the sample's (counted here as plain Rust), not
    // only the same in every mode.
    let text = std::fs::read_to_string(&sample).unwrap();
    let mut counts = std::collections::HashMap::<&str, u64>::new();
    for w in text.split_ascii_whitespace() {
        *counts.entry(w).or_default() += 1;
    }
    let mut top: Vec<(&str, u64)> = counts.iter().map(|(w, c)| (*w, *c)).collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let mut want = String::new();
    for (w, c) in top.iter().take(20) {
        want.push_str(&format!("{w}\t{c}\n"));
    }
    want.push_str(&format!("distinct words: {}\n", counts.len()));
    let got = &cases.iter().find(|(n, _)| n == "wordcount").unwrap().1[0];
    assert_eq!(String::from_utf8_lossy(got), want);
}
