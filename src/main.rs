use std::process::ExitCode;

use clap::Parser;
use sbert_tui::cli::{self, Cli};

fn main() -> ExitCode {
    let args = Cli::parse();
    let Some(command) = args.command else {
        eprintln!(
            "sbert-tui: the terminal UI is not built yet; use a subcommand (encode, similarity, info). \
             See `sbert-tui --help`."
        );
        return ExitCode::from(2);
    };
    match cli::run(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
