//! Decoders from other crates (arrow-ipc, parquet) run under
//! `catch_unwind`: they trust some offsets and counts in their input, and
//! a corrupt file or a hostile client must not take the process down (the
//! fuzz test, `bench/tests/fuzz.rs`, found panics in both).

use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs a decode, turning a panic into an error.
pub(crate) fn guarded<T, E: std::fmt::Display>(
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
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
        let step = match catch_unwind(AssertUnwindSafe(|| self.inner.next())) {
            Ok(step) => step.map(|r| r.map_err(|e| e.to_string())),
            Err(panic) => Some(Err(corrupt(&*panic))),
        };
        self.done = matches!(step, Some(Err(_)) | None);
        step
    }
}
