//! WordCount: `wordcount INPUT [--output DIR] [--partitions N] [--master URL]`.

use anyhow::Context;
use clap::Parser;
use flint::prelude::*;
// Words split as `split_ascii_whitespace` splits, as `Word` keys: text of up
// to 23 bytes held in three machine words, which the aggregation table hashes
// and compares without a branch on length (see `flint::text`).
use flint::text::{Word, Words};

#[derive(Parser)]
struct Args {
    input: String,
    #[arg(long)]
    output: Option<String>,
    #[arg(long)]
    partitions: Option<usize>,
    #[arg(long)]
    master: Option<String>,
}

fn main() {
    // First: in an executor process started by a cluster worker this runs the
    // executor and never returns.
    flint::init();
    if let Err(e) = run() {
        eprintln!("wordcount: {e:#}");
        std::process::exit(1);
    }
}

fn tab_line(w: &str, c: u64) -> String {
    format!("{w}\t{c}")
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut conf = FlintConf::new().app_name("wordcount");
    if let Some(m) = &args.master {
        conf = conf.master(m.clone());
    }
    let sc = FlintContext::new(conf)?;
    let parts = args.partitions.unwrap_or_else(|| sc.default_parallelism());
    let counts = sc
        .text_file_chunks(&args.input, parts)
        .with_context(|| format!("reading {}", args.input))?
        .flat_map(Fn!(|text: String| Words::new(text)))
        .map(Fn!(|w: Word| (w, 1u64)))
        .reduce_by_key_with(parts, Fn!(|a: u64, b: u64| a + b));
    match &args.output {
        Some(dir) => {
            counts
                .map(Fn!(|(w, c): (Word, u64)| tab_line(&w, c)))
                .save_as_text_file(dir)?;
        }
        None => {
            let all = counts.collect()?;
            let distinct = all.len();
            let mut top = all;
            top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            for (w, c) in top.iter().take(20) {
                println!("{w}\t{c}");
            }
            println!("distinct words: {distinct}");
        }
    }
    Ok(())
}
