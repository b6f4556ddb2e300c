//! Decoders from other crates (arrow-ipc, parquet) run under
//! `catch_unwind`: they trust some offsets and counts in their input, and
//! a corrupt file or a hostile client must not take the process down (the
//! fuzz test, `bench/tests/fuzz.rs`, found panics in both).
//!
//! Such a panic is an error about the input, said where the input is
//! refused (a dead letter, a status naming the file or the message), not
//! a bug: [`quiet_guarded_panics`] installs a panic hook that stays silent
//! for a panic inside [`catch_quietly`] and reports every other one as
//! the default hook does (the daemon installs it at start), so a hostile
//! client cannot fill the log with panic reports.

use std::any::Any;
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

thread_local! {
    /// Inside [`catch_quietly`] on this thread.
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` under `catch_unwind`, its panic (if any) not reported by the
/// hook [`quiet_guarded_panics`] installs.
pub fn catch_quietly<T>(f: impl FnOnce() -> T) -> Result<T, Box<dyn Any + Send>> {
    let was = GUARDED.with(|g| g.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(was));
    result
}

/// Installs a panic hook that is silent for a panic inside
/// [`catch_quietly`] (a decoder refusing its input) and hands every other
/// panic to the hook that was installed before.
pub fn quiet_guarded_panics() {
    let before = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !GUARDED.with(Cell::get) {
            before(info);
        }
    }));
}

/// Runs a decode, turning a panic into an error.
pub fn guarded<T, E: std::fmt::Display>(f: impl FnOnce() -> Result<T, E>) -> Result<T, String> {
    match catch_quietly(f) {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(panic) => Err(corrupt(&*panic)),
    }
}

fn corrupt(panic: &(dyn std::any::Any + Send)) -> String {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("no message");
    format!("corrupt input (the decoder failed: {what})")
}

/// An iterator of decoded items whose every step is [`guarded`]; after an
/// error it ends.
pub(crate) struct Guarded<I> {
    inner: I,
    done: bool,
}

impl<I> Guarded<I> {
    pub fn new(inner: I) -> Self {
        Self { inner, done: false }
    }
}

impl<T, E: std::fmt::Display, I: Iterator<Item = Result<T, E>>> Iterator for Guarded<I> {
    type Item = Result<T, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let step = match catch_quietly(|| self.inner.next()) {
            Ok(step) => step.map(|r| r.map_err(|e| e.to_string())),
            Err(panic) => Some(Err(corrupt(&*panic))),
        };
        self.done = matches!(step, Some(Err(_)) | None);
        step
    }
}
