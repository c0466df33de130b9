//! `ringsfu-loadtest`: many synthetic Odoo clients in one process against ringsfu (one it starts,
//! or `--target`), measured against the machine's own ceiling.
//!
//! ```text
//! ringsfu-loadtest run meeting --size 8 --duration 20
//! ringsfu-loadtest ceiling
//! ringsfu-loadtest bench            # ceiling + short audio-room, meeting and broadcast runs
//! ringsfu-loadtest scaling --max-shards 8   # one broadcast over 1..8 shards, against N = 1
//! ringsfu-loadtest compare reports-before/meeting.json reports/meeting.json
//! ```

mod ceiling;
mod client;
mod compare;
mod expectations;
mod headline;
mod machine;
mod report;
mod run;
mod scaling;
mod scenario;
mod server;

use clap::{Parser, Subcommand};
use ringsfu::runtime::cpu::shard_cpus;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "ringsfu-loadtest", about = "Load tests and benchmarks for ringsfu")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs one scenario and writes its report (JSON and HTML).
    Run(Box<run::RunArgs>),
    /// Measures this machine's ceiling (UDP send rates, AES-GCM) and prints it as JSON.
    Ceiling {
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
    },
    /// The benchmark of `make bench`: the ceiling, then short audio-room, meeting and broadcast
    /// runs; a summary table of ringsfu against the ceiling.
    Bench {
        #[arg(long, default_value = "reports")]
        out: PathBuf,
        /// Seconds per scenario.
        #[arg(long, default_value_t = 20)]
        duration: u64,
        #[arg(long, default_value_t = 1)]
        shards: usize,
    },
    /// A before/after table (Markdown on stdout) of the headline figures of two run reports.
    Compare(compare::CompareArgs),
    /// One channel over more and more shards: a broadcast of 1 publisher to N × `per-shard`
    /// listeners on N shards, N = 1 to `max-shards`, read against N = 1 (per-shard efficiency).
    Scaling {
        #[arg(long, default_value = "reports")]
        out: PathBuf,
        /// Seconds per run.
        #[arg(long, default_value_t = 15)]
        duration: u64,
        /// Listeners per shard (each shard's budget for the channel).
        #[arg(long, default_value_t = 300)]
        per_shard: usize,
        /// The most shards; leave at least one core to the load generator [default: cores − 1].
        #[arg(long)]
        max_shards: Option<usize>,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Cmd::Compare(args) = &cli.command {
        exit_on_error(compare::compare(args));
        return;
    }
    // The load generator stays off the cores of the shards it starts (threads inherit this).
    match &cli.command {
        Cmd::Run(args) if args.target.is_none() && !args.no_pin => run::pin_away_from(&shard_cpus(args.shards)),
        Cmd::Bench { shards, .. } => run::pin_away_from(&shard_cpus(*shards)),
        Cmd::Scaling { max_shards, .. } => {
            run::pin_away_from(&shard_cpus(max_shards.unwrap_or_else(default_max_shards)))
        }
        _ => {}
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let outcome = runtime.block_on(async {
        match cli.command {
            Cmd::Run(args) => run::run(*args).await.map(|_| ()),
            Cmd::Ceiling { seconds } => {
                let c = tokio::task::spawn_blocking(move || ceiling::measure_all(seconds))
                    .await
                    .map_err(|e| e.to_string())?;
                println!("{}", serde_json::to_string_pretty(&c).expect("serializable"));
                Ok(())
            }
            Cmd::Bench { out, duration, shards } => run::bench(out, duration, shards).await,
            Cmd::Scaling { out, duration, per_shard, max_shards } => {
                let max_shards = max_shards.unwrap_or_else(default_max_shards);
                scaling::scaling(scaling::ScalingArgs { out, duration, per_shard, max_shards }).await
            }
            Cmd::Compare(_) => unreachable!("compare returned above, without a runtime"),
        }
    });
    exit_on_error(outcome);
}

/// Every core but one (the load generator's), at least one.
fn default_max_shards() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).saturating_sub(1).max(1)
}

fn exit_on_error(outcome: Result<(), String>) {
    if let Err(e) = outcome {
        eprintln!("ringsfu-loadtest: {e}");
        std::process::exit(1);
    }
}
