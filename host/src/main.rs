use std::process::ExitCode;

use clap::Parser;
use relay::cli::{Cli, Command, LogFormat, PluginCommand, check_config, init_logging, plugin_check, serve, status};

/// See the workspace manifest: memory goes back to the OS after a burst of streams.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { config, log_format } => {
                init_logging(log_format);
                serve(config).await
            }
            Command::CheckConfig { config } => {
                // Warnings (a readable file holding keys) go to stderr, as with `serve`.
                init_logging(LogFormat::Text);
                check_config(&config)
            }
            Command::Status { url, metrics_token } => status(&url, metrics_token.as_deref()).await,
            Command::Plugin { command: PluginCommand::Check { file } } => plugin_check(&file).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
