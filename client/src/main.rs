//! The `shoal` command: parses the command line, installs logging and runs
//! the chosen command from the library.

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = shoal_client::cli::Cli::parse();
    let filter = cli.log_filter();
    shoal_client::main_with(filter, || shoal_client::run(cli))
}
