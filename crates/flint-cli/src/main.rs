//! The `flint` command. Later issues add `master`, `worker` and `submit`.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "flint", version, about = "Flint: Spark's architecture in Rust")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the version.
    Version,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Version) | None => println!("flint {}", env!("CARGO_PKG_VERSION")),
    }
    Ok(())
}
