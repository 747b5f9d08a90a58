//! The load generator behind `make bench` (driven by `bench/run.sh`): closed-loop load,
//! a hold test of many slow streams, start-up timing, CPU and RSS of the server under test
//! read from /proc, and the report with the targets.
//!
//! Every measuring command appends `target<TAB>key<TAB>value` lines to a results file;
//! `report` turns that file into the table.

mod client;
mod load;
mod procfs;
mod report;
mod results;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::client::{Check, Target};
use crate::results::Recorder;

/// Tokio workers of the load generator. One leaves the 2-core machine's other core to the
/// server under test; the figures that matter (CPU per request) do not depend on it.
const DEFAULT_THREADS: usize = 1;

#[derive(Parser)]
#[command(about = "Load generator and report for make bench")]
struct Cli {
    /// Tokio worker threads.
    #[arg(long, default_value_t = DEFAULT_THREADS)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print COUNT distinct free loopback ports, one per line.
    FreePorts { count: usize },
    /// Closed-loop load: CONCURRENCY connections, each sending requests back to back.
    Load(LoadArgs),
    /// N concurrent (slow) streams, all at once; RSS sampled throughout and after.
    Hold(HoldArgs),
    /// Poll until the target answers 200; record the time since SINCE (epoch µs).
    WaitOk(WaitArgs),
    /// Record the resident memory of the server's processes.
    Rss {
        #[command(flatten)]
        server: Server,
        #[command(flatten)]
        record: RecordArgs,
        /// The key to record it under.
        #[arg(long)]
        key: String,
    },
    /// Print the table and the targets from a results file.
    Report { results: PathBuf },
}

#[derive(Args)]
struct TargetArgs {
    /// The full URL to POST to.
    #[arg(long)]
    url: String,
    /// An extra request header, `name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// The JSON request body.
    #[arg(long)]
    body: String,
    /// Expect an SSE stream ending with `data: [DONE]`.
    #[arg(long)]
    stream: bool,
    /// Fewest SSE `data:` events a complete stream has ([DONE] included).
    #[arg(long, default_value_t = 0)]
    min_events: usize,
}

impl TargetArgs {
    fn target(&self) -> Result<Target> {
        Target::new(
            &self.url,
            &self.headers,
            self.body.clone(),
            Check { stream: self.stream, min_events: self.min_events },
        )
    }
}

#[derive(Args)]
struct Server {
    /// A process of the server under test; its direct children (nginx workers) count too.
    #[arg(long = "pid", required = true)]
    pids: Vec<u32>,
}

#[derive(Args)]
struct RecordArgs {
    /// The results file to append to.
    #[arg(long)]
    record: PathBuf,
    /// The target's name in the table (direct, nginx, relay-openai, ...).
    #[arg(long)]
    target: String,
}

impl RecordArgs {
    fn recorder(&self, phase: &str) -> Recorder {
        Recorder::new(self.record.clone(), self.target.clone(), phase.to_string())
    }
}

#[derive(Args)]
struct LoadArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    server: Server,
    #[command(flatten)]
    record: RecordArgs,
    /// The phase's name (the key prefix in the results).
    #[arg(long)]
    phase: String,
    #[arg(long)]
    concurrency: usize,
    /// Connections being opened at the same time (see `hold --ramp`).
    #[arg(long)]
    ramp: usize,
    /// Seconds of load before measuring starts.
    #[arg(long)]
    warmup: f64,
    /// Seconds measured.
    #[arg(long)]
    seconds: f64,
}

#[derive(Args)]
struct HoldArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    server: Server,
    #[command(flatten)]
    record: RecordArgs,
    #[arg(long)]
    phase: String,
    /// Streams opened at once.
    #[arg(long)]
    streams: usize,
    /// Streams being opened at the same time (connect to response head): keeps the
    /// listen backlogs from overflowing, which would add 1 s SYN retries to the latency.
    #[arg(long)]
    ramp: usize,
    /// Bound on one stream, seconds.
    #[arg(long)]
    timeout: f64,
    /// Seconds to wait after the last stream before the "after" RSS sample.
    #[arg(long)]
    after: f64,
}

#[derive(Args)]
struct WaitArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    record: RecordArgs,
    /// The key to record the start-up time under.
    #[arg(long)]
    key: String,
    /// When the server was spawned, in µs since the epoch (bash: $EPOCHREALTIME).
    #[arg(long)]
    since_us: u64,
    /// Give up after this many seconds.
    #[arg(long)]
    timeout: f64,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::FreePorts { count } => {
            for port in client::free_ports(count)? {
                println!("{port}");
            }
            Ok(())
        }
        Command::Report { results } => report::print(&results),
        command => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(cli.threads.max(1))
                .enable_all()
                .build()
                .context("cannot start the tokio runtime")?;
            rt.block_on(run(command))
        }
    }
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Load(a) => {
            let plan = load::LoadPlan {
                concurrency: a.concurrency,
                ramp: a.ramp.max(1),
                warmup: secs(a.warmup)?,
                measure: secs(a.seconds)?,
            };
            load::closed_loop(a.target.target()?, &a.server.pids, plan, &a.record.recorder(&a.phase)).await
        }
        Command::Hold(a) => {
            let plan = load::HoldPlan {
                streams: a.streams,
                ramp: a.ramp.max(1),
                timeout: secs(a.timeout)?,
                after: secs(a.after)?,
            };
            load::hold(a.target.target()?, &a.server.pids, plan, &a.record.recorder(&a.phase)).await
        }
        Command::WaitOk(a) => {
            let ms = load::wait_ok(a.target.target()?, a.since_us, secs(a.timeout)?).await?;
            a.record.recorder("").put(&a.key, format!("{ms:.1}"))
        }
        Command::Rss { server, record, key } => {
            let kib = procfs::Procs::with_children(&server.pids)?.rss_kib()?;
            record.recorder("").put(&key, kib)
        }
        Command::FreePorts { .. } | Command::Report { .. } => unreachable!("handled without a runtime"),
    }
}

fn secs(s: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("{s} is not a duration in seconds"))
}
