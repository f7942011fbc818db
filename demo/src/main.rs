//! `shoal-demo`: parses the command line, installs logging and runs the demo.

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = shoal_demo::cli::Cli::parse();
    shoal_client::main_with(cli.log_filter(), || shoal_demo::run(&cli.demo))
}
