//! PageRank as Spark's example: `pagerank INPUT ITERATIONS [--master URL]`, INPUT
//! lines `src dst`; prints `url has rank: r` per page.

use clap::Parser;
use flint::prelude::*;

#[derive(Parser)]
struct Args {
    input: String,
    iterations: usize,
    #[arg(long)]
    master: Option<String>,
}

fn main() {
    // First: in an executor process started by a cluster worker this runs the
    // executor and never returns.
    flint::init();
    if let Err(e) = run() {
        eprintln!("pagerank: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut conf = FlintConf::new().app_name("pagerank");
    if let Some(m) = &args.master {
        conf = conf.master(m.clone());
    }
    let sc = FlintContext::new(conf)?;
    let parts = sc.default_parallelism();
    let links = sc
        .text_file(&args.input, parts)?
        .flat_map(Fn!(|line: String| {
            let mut it = line.split_whitespace();
            match (it.next(), it.next()) {
                (Some(a), Some(b)) => Some((a.to_string(), b.to_string())),
                _ => None,
            }
        }))
        .distinct()
        .group_by_key();
    let mut ranks = links.map_values(Fn!(|_v: Vec<String>| 1.0f64));
    for _ in 0..args.iterations {
        let contribs =
            links
                .join(&ranks)
                .values()
                .flat_map(Fn!(|(urls, rank): (Vec<String>, f64)| {
                    let n = urls.len() as f64;
                    urls.into_iter()
                        .map(move |u| (u, rank / n))
                        .collect::<Vec<_>>()
                }));
        ranks = contribs
            .reduce_by_key(Fn!(|a: f64, b: f64| a + b))
            .map_values(Fn!(|s: f64| 0.15 + 0.85 * s));
    }
    let mut out = ranks.collect()?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    for (url, rank) in out {
        println!("{url} has rank: {rank}");
    }
    Ok(())
}
