//! What travels with a flow of requests: whose rows are whose, which rows
//! an operator refused and why; and, once the chain has run, each
//! request's reply.

use std::sync::Arc;

use arrow_array::RecordBatch;
use futures::channel::oneshot;

use super::{OnlineError, Permit, Reply};

/// One request's rows in the flow's original batch.
struct Pending {
    start: u32,
    len: u32,
    reply: oneshot::Sender<Result<Reply, OnlineError>>,
    _permit: Permit,
}

/// The requests a flow answers. Row numbers are the flow's original rows
/// (as the batcher built the batch); operators that refuse rows say which
/// ([`crate::operators::Flow::drop_rows`]), so each reply gets exactly its
/// own rows.
#[derive(Default)]
pub struct Answer {
    pending: Vec<Pending>,
    /// The original row of each row now in the flow's batch; `None` while
    /// no row has been refused (row i is row i).
    rows: Option<Vec<u32>>,
    /// Refused rows (original numbers, ascending per operator) and why.
    failed: Vec<(u32, String)>,
    /// The rows as they stood before an aggregate took them.
    captured: Option<Option<RecordBatch>>,
    /// The requests read the features' state without updating it.
    read_only: bool,
}

impl Answer {
    /// A request of `len` rows starting at original row `start`.
    pub(super) fn push(
        &mut self,
        start: usize,
        len: usize,
        reply: oneshot::Sender<Result<Reply, OnlineError>>,
        permit: Permit,
    ) {
        self.pending.push(Pending {
            start: start as u32,
            len: len as u32,
            reply,
            _permit: permit,
        });
    }

    /// Whether the features read the keys' state and leave it
    /// (`update_state = false`).
    pub(crate) fn reads_only(&self) -> bool {
        self.read_only
    }

    pub(super) fn set_read_only(&mut self, read_only: bool) {
        self.read_only = read_only;
    }

    /// Rows of the current batch were refused: `keep[i]` false for each,
    /// with `reasons` naming (current row, why).
    pub(crate) fn drop_rows<'a>(
        &mut self,
        keep: &[bool],
        reasons: impl IntoIterator<Item = (usize, &'a str)>,
    ) {
        let original = |rows: &Option<Vec<u32>>, i: usize| rows.as_ref().map_or(i as u32, |r| r[i]);
        for (i, why) in reasons {
            debug_assert!(!keep[i], "a refused row is not kept");
            self.failed.push((original(&self.rows, i), why.to_string()));
        }
        let kept: Vec<u32> = keep
            .iter()
            .enumerate()
            .filter(|(_, k)| **k)
            .map(|(i, _)| original(&self.rows, i))
            .collect();
        self.rows = Some(kept);
    }

    /// The whole batch was refused, for `why`.
    pub(crate) fn refuse_all(&mut self, rows: usize, why: &str) {
        let keep = vec![false; rows];
        self.drop_rows(&keep, (0..rows).map(|i| (i, why)));
    }

    /// Keeps the rows as they are now (before an aggregate takes them).
    pub(crate) fn capture(&mut self, batch: Option<&RecordBatch>) {
        self.captured = Some(batch.cloned());
    }

    /// Sends each request its rows of `batch` (the flow's rows at the end
    /// of the chain, unless captured earlier), or the reasons its rows
    /// were refused.
    pub(crate) fn deliver(self, batch: Option<&RecordBatch>) {
        let batch = match &self.captured {
            Some(b) => b.as_ref(),
            None => batch,
        };
        let rows_now = batch.map_or(0, RecordBatch::num_rows);
        // One shared batch for every reply.
        let shared = batch.map(|b| Arc::new(b.clone()));
        if let Some(rows) = &self.rows {
            debug_assert_eq!(rows.len(), rows_now, "every row is tracked");
            debug_assert!(rows.windows(2).all(|w| w[0] < w[1]), "order is kept");
        }
        for p in self.pending {
            let end = p.start + p.len;
            let failed: Vec<(usize, String)> = self
                .failed
                .iter()
                .filter(|(r, _)| (p.start..end).contains(r))
                .map(|(r, why)| ((r - p.start) as usize, why.clone()))
                .collect();
            let result = if !failed.is_empty() {
                let mut failed = failed;
                failed.sort_by_key(|(r, _)| *r);
                Err(OnlineError::Rows(failed))
            } else {
                // Order is kept, so a request's surviving rows are one run.
                let (from, to) = match &self.rows {
                    None => (p.start as usize, end as usize),
                    Some(rows) => (
                        rows.partition_point(|r| *r < p.start),
                        rows.partition_point(|r| *r < end),
                    ),
                };
                match &shared {
                    Some(b) if to <= rows_now && to - from == p.len as usize => Ok(Reply {
                        batch: b.clone(),
                        offset: from,
                        len: to - from,
                    }),
                    _ => Err(OnlineError::Rows(
                        (0..p.len as usize)
                            .map(|r| (r, "the chain passed on no row for it".to_string()))
                            .collect(),
                    )),
                }
            };
            // A requester that went away is no error.
            let _ = p.reply.send(result);
        }
    }
}
