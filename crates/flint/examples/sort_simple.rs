//! Sort as a user writes it first (Spark's `(r.take(10), r)`): each 100-byte
//! gensort record keyed by a copy of its first 10 bytes.
//! `sort_simple INPUT OUTPUT [--master URL] [--executor-memory M]`; writes the
//! same output as the tuned `sort` example, whose key is two numbers.

use clap::Parser;
use flint::Bytes;
use flint::prelude::*;

#[derive(Parser)]
struct Args {
    input: String,
    output: String,
    #[arg(long)]
    master: Option<String>,
    /// Executor memory (e.g. 512m); the sort spills beyond its share.
    #[arg(long)]
    executor_memory: Option<String>,
}

fn main() {
    flint::init();
    if let Err(e) = run() {
        eprintln!("sort_simple: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut conf = FlintConf::new().app_name("sort_simple");
    if let Some(m) = &args.master {
        conf = conf.master(m.clone());
    }
    if let Some(m) = &args.executor_memory {
        conf = conf.set("flint.executor.memory", m.clone());
    }
    let sc = FlintContext::new(conf)?;
    let input = sc.binary_records(&args.input, 100, sc.default_parallelism())?;
    let parts = input.num_partitions();
    input
        .map(Fn!(|rec: Bytes| (Bytes(rec[..10].to_vec()), rec)))
        .sort_by_key(true, parts)?
        .values()
        .save_as_binary_records(&args.output)?;
    Ok(())
}
