//! Running library code that may panic on bad input (the tokenizers crate unwraps inside its
//! `tokenizer.json` reader), so that the panic becomes an error and prints nothing.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

thread_local! {
    /// True while this thread runs guarded code: its panics are answered as errors.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

static HOOK: Once = Once::new();

/// Runs `f`; a panic inside it becomes `Err` with its message, and is not printed. Other panics
/// (other threads, or outside `f`) reach the previous panic hook as before.
pub fn catch_quietly<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let was = QUIET.with(|q| q.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    result.map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error() {
        assert_eq!(catch_quietly(|| 2 + 2), Ok(4));
        let e = catch_quietly(|| -> u32 { panic!("bad input at {}", 3) }).unwrap_err();
        assert_eq!(e, "bad input at 3");
    }
}
