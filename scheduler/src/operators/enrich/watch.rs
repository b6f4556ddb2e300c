//! Reloads tables whose file changed: one thread per pipeline with
//! tables, checking each file's length, modification time and inode every
//! [`WATCH_INTERVAL`] and loading a changed one in the background (the
//! operator keeps joining the snapshot in use meanwhile). A file is tried
//! once per change: a broken one is refused, says why and is counted, and
//! is tried again when it next changes.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::LiveTable;
use crate::error::chain;
use crate::pipeline::StopSignal;

/// How often a table's file is checked for a change.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// The watcher thread; stops with its signal.
pub struct TableWatcher {
    stop: Arc<StopSignal>,
    thread: Option<JoinHandle<()>>,
}

impl TableWatcher {
    pub(crate) fn start(pipeline: &str, tables: Vec<Arc<LiveTable>>) -> std::io::Result<Self> {
        let stop = StopSignal::new();
        let signal = stop.clone();
        let name = pipeline.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("roo-tables-{pipeline}"))
            .spawn(move || {
                while !signal.wait_timeout(WATCH_INTERVAL) {
                    for t in &tables {
                        match t.reload_if_changed() {
                            Some(Ok(version)) => tracing::info!(
                                "pipeline {name}: table {} ({}) reloaded: {version}",
                                t.name(),
                                t.spec().table.display()
                            ),
                            Some(Err(e)) => tracing::error!(
                                "pipeline {name}: table {} refused, the snapshot before kept: {}",
                                t.name(),
                                chain(&e)
                            ),
                            None => {}
                        }
                    }
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it (a load under way finishes first).
    pub fn stop(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TableWatcher {
    fn drop(&mut self) {
        self.stop();
    }
}
