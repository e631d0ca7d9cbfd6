use std::alloc::{GlobalAlloc, Layout, System};
use std::process::ExitCode;

use clap::Parser;
use sbert_tui::cli::{self, Cli};

/// The system allocator, which puts the terminal back before a failed allocation ends the process:
/// the standard library prints "memory allocation of N bytes failed" and aborts, and without this
/// the message vanished with the alternate screen and left the terminal in raw mode.
struct Allocator;

// SAFETY: every call is passed to the system allocator unchanged.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as the caller's contract.
        let p = unsafe { System.alloc(layout) };
        if p.is_null() {
            sbert_tui::tui::restore_terminal_now();
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as the caller's contract.
        let p = unsafe { System.alloc_zeroed(layout) };
        if p.is_null() {
            sbert_tui::tui::restore_terminal_now();
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as the caller's contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            sbert_tui::tui::restore_terminal_now();
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as the caller's contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Allocator = Allocator;

fn main() -> ExitCode {
    sbert_tui::tune_runtime();
    let args = Cli::parse();
    let result = match args.command {
        Some(command) => cli::run(command),
        None => cli::run_ui(args.ui),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cli::report(&e));
            ExitCode::FAILURE
        }
    }
}
