//! Sort of 100-byte gensort records by their 10-byte key:
//! `sort INPUT OUTPUT [--partitions N] [--master URL]`.

use clap::Parser;
use flint::Bytes;
use flint::prelude::*;

#[derive(Parser)]
struct Args {
    input: String,
    output: String,
    /// Output partitions (default: one per input split, as Spark).
    #[arg(long)]
    partitions: Option<usize>,
    #[arg(long)]
    master: Option<String>,
    /// Executor memory (e.g. 512m); aggregation and sort spill beyond their share.
    #[arg(long)]
    executor_memory: Option<String>,
}

/// The 10 key bytes as big-endian numbers (8 + 2 bytes): comparing them in
/// order compares the bytes as unsigned. Two numbers rather than one `u128`:
/// they encode in 13 bytes at most, not 19 (the shuffle's varints), and a
/// sort entry is 24 bytes, not 32 (measured: 2.06-2.08 s against 2.21-2.41 s).
fn sort_key(rec: &[u8]) -> (u64, u16) {
    let mut hi = [0u8; 8];
    hi.copy_from_slice(&rec[..8]);
    (u64::from_be_bytes(hi), u16::from_be_bytes([rec[8], rec[9]]))
}

fn main() {
    // First: in an executor process started by a cluster worker this runs the
    // executor and never returns.
    flint::init();
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
    let input = sc.binary_records(&args.input, 100, sc.default_parallelism())?;
    // As Spark's sortByKey: as many output partitions as input splits by default.
    let parts = args.partitions.unwrap_or_else(|| input.num_partitions());
    input
        .map(Fn!(|rec: Bytes| (sort_key(&rec), rec)))
        .sort_by_key(true, parts)?
        .values()
        .save_as_binary_records(&args.output)?;
    Ok(())
}
