//! WordCount: `wordcount INPUT [--output DIR] [--partitions N] [--master URL]`.

use anyhow::Context;
use clap::Parser;
use compact_str::CompactString;
use flint::prelude::*;

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

/// The words of a line, split on ASCII whitespace (space, tab, CR, LF, form
/// feed: what `split_ascii_whitespace` splits on), eight bytes at a time
/// (`flint::text`). Words are
/// CompactStrings: inline up to 24 bytes, so counting a word allocates nothing
/// and compares without chasing a pointer. The iterator owns its line, so no
/// per-line vector is built.
struct Words {
    line: String,
    pos: usize,
}

impl Iterator for Words {
    type Item = CompactString;
    fn next(&mut self) -> Option<CompactString> {
        let r = flint::text::next_ascii_word(&self.line, &mut self.pos)?;
        // Word boundaries are ASCII bytes or the line's ends.
        self.line.get(r).map(CompactString::from)
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
        .text_file(&args.input, parts)
        .with_context(|| format!("reading {}", args.input))?
        .flat_map(Fn!(|line: String| Words { line, pos: 0 }))
        .map(Fn!(|w: CompactString| (w, 1u64)))
        .reduce_by_key_with(parts, Fn!(|a: u64, b: u64| a + b));
    match &args.output {
        Some(dir) => {
            counts
                .map(Fn!(|(w, c): (CompactString, u64)| tab_line(&w, c)))
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
