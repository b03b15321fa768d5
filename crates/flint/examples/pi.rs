//! Monte Carlo Pi: `pi [SLICES] [--master URL]`.

use clap::Parser;
use flint::prelude::*;

#[derive(Parser)]
struct Args {
    slices: Option<usize>,
    #[arg(long)]
    master: Option<String>,
}

fn main() {
    // First: in an executor process started by a cluster worker this runs the
    // executor and never returns.
    flint::init();
    if let Err(e) = run() {
        eprintln!("pi: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut conf = FlintConf::new().app_name("pi");
    if let Some(m) = &args.master {
        conf = conf.master(m.clone());
    }
    let sc = FlintContext::new(conf)?;
    let slices = args.slices.unwrap_or(2).max(1);
    let n = (100_000usize * slices).min(i32::MAX as usize) as i64;
    let inside = sc
        .range(0, n, 1, slices)?
        .map(Fn!(|i: i64| {
            // A per-element hash stands in for a random generator: deterministic,
            // uniform enough, and independent of partitioning.
            let mut z = (i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let x = (z >> 32) as f64 / u32::MAX as f64 * 2.0 - 1.0;
            let y = (z & 0xffff_ffff) as f64 / u32::MAX as f64 * 2.0 - 1.0;
            u64::from(x * x + y * y <= 1.0)
        }))
        .reduce(Fn!(|a: u64, b: u64| a + b))?;
    println!("Pi is roughly {}", 4.0 * inside as f64 / n as f64);
    Ok(())
}
