//! WordCount as a user writes it first (the README's code): `String` words
//! from `split_whitespace`, a `Vec` per line. `wordcount_simple INPUT
//! [--master URL]`; prints the 20 most frequent words and the distinct count,
//! as the tuned `wordcount` example does (same output).

use clap::Parser;
use flint::prelude::*;

#[derive(Parser)]
struct Args {
    input: String,
    #[arg(long)]
    master: Option<String>,
}

fn main() {
    flint::init();
    if let Err(e) = run() {
        eprintln!("wordcount_simple: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut conf = FlintConf::new().app_name("wordcount_simple");
    if let Some(m) = &args.master {
        conf = conf.master(m.clone());
    }
    let sc = FlintContext::new(conf)?;
    let parts = sc.default_parallelism();
    let counts = sc
        .text_file(&args.input, parts)?
        .flat_map(Fn!(|l: String| l
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()))
        .map(Fn!(|w: String| (w, 1u64)))
        .reduce_by_key(Fn!(|a: u64, b: u64| a + b))
        .collect()?;
    let distinct = counts.len();
    let mut top = counts;
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    for (w, c) in top.iter().take(20) {
        println!("{w}\t{c}");
    }
    println!("distinct words: {distinct}");
    Ok(())
}
