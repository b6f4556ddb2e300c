//! What an aggregate is (`[[pipeline.aggregate]]`), its bounds, and every
//! way one can be refused, each naming the aggregate and what was expected.

use std::fmt;

use thiserror::Error;

/// How an aggregate combines a key's events in a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AggFn {
    /// Events (Int64 `value`).
    Count,
    /// The column's sum (nulls and NaN skipped).
    Sum,
    /// The column's mean over its non-null values.
    Mean,
    /// The column's largest value.
    Max,
}

impl AggFn {
    pub const NAMES: &'static str = "count, sum, mean or max";

    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "count" => Self::Count,
            "sum" => Self::Sum,
            "mean" => Self::Mean,
            "max" => Self::Max,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::Sum => "sum",
            Self::Mean => "mean",
            Self::Max => "max",
        }
    }

    /// Whether it reads a value column.
    pub fn reads_column(self) -> bool {
        self != Self::Count
    }

    /// Whether past `keys_max` keys it keeps a Space-Saving summary (a
    /// counter can take over another's count); mean and max cannot.
    pub fn summarises(self) -> bool {
        matches!(self, Self::Count | Self::Sum)
    }
}

impl fmt::Display for AggFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The most rows a window may emit (`top`).
pub const TOP_MAX: usize = 10_000;
/// The most panes a window may span (`window / every`).
pub const PANES_PER_WINDOW_MAX: i64 = 10_000;
/// The default bound on distinct keys per pane.
pub const KEYS_MAX_DEFAULT: usize = 1_000_000;

/// One `[[pipeline.aggregate]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct AggregateSpec {
    /// Names the operator (and the Flight `latest` stream's pipeline).
    pub name: String,
    /// The key column(s): one, or several for a compound key.
    pub key: Vec<String>,
    pub agg: AggFn,
    /// The value aggregated (none for count).
    pub column: Option<String>,
    /// The window's length, µs.
    pub window_us: i64,
    /// The hop: windows end at every multiple of it (µs since the epoch).
    pub every_us: i64,
    /// Rows per window; 0: every key.
    pub top: usize,
    /// Distinct keys a pane counts exactly; past it the pane keeps a
    /// Space-Saving summary of this many counters (count, sum).
    pub keys_max: usize,
    /// Events whose window has been emitted: older than the watermark.
    pub lateness_us: i64,
}

/// An aggregate that cannot run as configured or on its pipeline's input.
#[derive(Debug, Error, PartialEq)]
pub enum AggregateError {
    #[error("aggregate {aggregate}: no key: expected a column name or a list of them")]
    NoKey { aggregate: String },
    #[error("aggregate {aggregate}: no column {column:?} in the input (columns: {available})")]
    NoColumn {
        aggregate: String,
        column: String,
        available: String,
    },
    #[error("aggregate {aggregate}: key column {column} is {found}; expected integers, text or booleans")]
    KeyType {
        aggregate: String,
        column: String,
        found: String,
    },
    #[error("aggregate {aggregate}: value column {column} is {found}; expected numbers")]
    ValueType {
        aggregate: String,
        column: String,
        found: String,
    },
    #[error("aggregate {aggregate}: agg {agg} needs a column to aggregate (column = \"...\")")]
    NoValueColumn { aggregate: String, agg: AggFn },
    #[error("aggregate {aggregate}: agg count reads no column, but column {column:?} is set")]
    ExtraColumn { aggregate: String, column: String },
    #[error("aggregate {aggregate}: {what} is zero or negative; expected a positive duration such as \"10s\"")]
    Duration {
        aggregate: String,
        what: &'static str,
    },
    #[error("aggregate {aggregate}: every ({every_us} µs) does not divide window ({window_us} µs); expected a window that is a whole number of hops")]
    EveryDividesWindow {
        aggregate: String,
        window_us: i64,
        every_us: i64,
    },
    #[error(
        "aggregate {aggregate}: window / every is {panes} panes; at most {PANES_PER_WINDOW_MAX}"
    )]
    TooManyPanes { aggregate: String, panes: i64 },
    #[error("aggregate {aggregate}: top = {top}; expected 0 (every key) to {TOP_MAX}")]
    Top { aggregate: String, top: usize },
    #[error("aggregate {aggregate}: keys_max = 0; expected at least 1")]
    KeysMax { aggregate: String },
    #[error(
        "aggregate {aggregate}: the pipeline has no event_time; windows are measured in event time"
    )]
    NoEventTime { aggregate: String },
    #[error(
        "aggregate {aggregate}: output column {column:?} is also a key column; rename the key"
    )]
    ColumnClash { aggregate: String, column: String },
}

impl AggregateSpec {
    /// Checks what needs no input schema: durations, bounds, the column.
    pub fn check(&self) -> Result<(), AggregateError> {
        let aggregate = || self.name.clone();
        if self.key.is_empty() {
            return Err(AggregateError::NoKey {
                aggregate: aggregate(),
            });
        }
        match (&self.column, self.agg.reads_column()) {
            (None, true) => {
                return Err(AggregateError::NoValueColumn {
                    aggregate: aggregate(),
                    agg: self.agg,
                })
            }
            (Some(c), false) => {
                return Err(AggregateError::ExtraColumn {
                    aggregate: aggregate(),
                    column: c.clone(),
                })
            }
            _ => {}
        }
        for (what, v) in [("window", self.window_us), ("every", self.every_us)] {
            if v <= 0 {
                return Err(AggregateError::Duration {
                    aggregate: aggregate(),
                    what,
                });
            }
        }
        if self.window_us % self.every_us != 0 {
            return Err(AggregateError::EveryDividesWindow {
                aggregate: aggregate(),
                window_us: self.window_us,
                every_us: self.every_us,
            });
        }
        let panes = self.window_us / self.every_us;
        if panes > PANES_PER_WINDOW_MAX {
            return Err(AggregateError::TooManyPanes {
                aggregate: aggregate(),
                panes,
            });
        }
        if self.top > TOP_MAX {
            return Err(AggregateError::Top {
                aggregate: aggregate(),
                top: self.top,
            });
        }
        if self.keys_max == 0 {
            return Err(AggregateError::KeysMax {
                aggregate: aggregate(),
            });
        }
        Ok(())
    }

    /// Panes per window.
    pub fn panes(&self) -> i64 {
        self.window_us / self.every_us
    }
}
