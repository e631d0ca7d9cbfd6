use std::process::ExitCode;

use clap::Parser;
use sbert_tui::cli::{self, Cli};

fn main() -> ExitCode {
    sbert_tui::tune_allocator();
    let args = Cli::parse();
    let result = match args.command {
        Some(command) => cli::run(command),
        None => cli::run_ui(args.ui),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
