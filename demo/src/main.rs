//! `shoal-demo`: parses the command line, installs logging and runs the demo.

use clap::Parser as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = shoal_demo::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli.log_filter())),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match shoal_demo::run(&cli.demo) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", shoal_client::one_line(&err));
            ExitCode::from(shoal_client::exit_code(&err))
        }
    }
}
