//! `demo-upstream`: an OpenAI-compatible vendor on loopback for `make run`, tests and
//! benchmarks.

use std::time::Duration;

use clap::Parser;
use clap::ValueEnum;
use demo_upstream::{Mock, Options, Vendor};

#[derive(Parser)]
#[command(about = "A small OpenAI-compatible upstream for demos, tests and benchmarks")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: String,
    /// Which vendor's API to speak.
    #[arg(long, value_enum, default_value = "openai")]
    vendor: VendorArg,
    /// The key clients must send (in the vendor's own header).
    #[arg(long, default_value = "sk-demo-upstream")]
    api_key: String,
    /// Content chunks per streamed reply.
    #[arg(long, default_value_t = 8)]
    chunks: usize,
    /// Pause between streamed chunks, in milliseconds.
    #[arg(long, default_value_t = 40)]
    chunk_delay_ms: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum VendorArg {
    Openai,
    Anthropic,
    Gemini,
    Azure,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let mock = Mock::serve(
        listener,
        Options {
            vendor: match args.vendor {
                VendorArg::Openai => Vendor::OpenAi,
                VendorArg::Anthropic => Vendor::Anthropic,
                VendorArg::Gemini => Vendor::Gemini,
                VendorArg::Azure => Vendor::Azure,
            },
            api_key: args.api_key,
            chunks: args.chunks,
            chunk_delay: Duration::from_millis(args.chunk_delay_ms),
            header_delay: Duration::ZERO,
            // A long-running demo or benchmark vendor must not keep every request.
            record: false,
        },
    );
    println!("demo upstream listening on {}", mock.root_url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
