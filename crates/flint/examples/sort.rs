//! Sort of 100-byte gensort records by their 10-byte key:
//! `sort INPUT OUTPUT [--partitions N] [--master URL]`.

use clap::Parser;
use flint::Bytes;
use flint::prelude::*;

#[derive(Parser)]
struct Args {
    input: String,
    output: String,
    #[arg(long)]
    partitions: Option<usize>,
    #[arg(long)]
    master: Option<String>,
    /// Executor memory (e.g. 512m); aggregation and sort spill beyond their share.
    #[arg(long)]
    executor_memory: Option<String>,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("sort: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut conf = FlintConf::new().app_name("sort");
    if let Some(m) = &args.master {
        conf = conf.master(m.clone());
    }
    if let Some(m) = &args.executor_memory {
        conf = conf.set("flint.executor.memory", m.clone());
    }
    let sc = FlintContext::new(conf)?;
    let parts = args.partitions.unwrap_or_else(|| sc.default_parallelism());
    sc.binary_records(&args.input, 100, parts)?
        .map(Fn!(|rec: Bytes| {
            let mut key = [0u8; 10];
            key.copy_from_slice(&rec[..10]);
            (key, rec)
        }))
        .sort_by_key(true, parts)?
        .values()
        .save_as_binary_records(&args.output)?;
    Ok(())
}
