//! What a feature is: its name, key, aggregation, value column and window,
//! and the pipeline-wide bounds of keyed state.

use std::fmt;

use thiserror::Error;

/// How a feature aggregates a key's window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Agg {
    /// Events in the window (Int64).
    Count,
    Sum,
    Mean,
    Min,
    Max,
    /// Population standard deviation (ddof 0).
    Std,
    /// The value of the most recent event in the window.
    Last,
    /// Distinct values in the window (Int64).
    CountDistinct,
    /// Seconds since the key's most recent earlier event, any age.
    TimeSinceLast,
}

impl Agg {
    pub const NAMES: &'static str =
        "count, sum, mean, min, max, std, last, count_distinct or time_since_last";

    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "count" => Self::Count,
            "sum" => Self::Sum,
            "mean" => Self::Mean,
            "min" => Self::Min,
            "max" => Self::Max,
            "std" => Self::Std,
            "last" => Self::Last,
            "count_distinct" => Self::CountDistinct,
            "time_since_last" => Self::TimeSinceLast,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::Sum => "sum",
            Self::Mean => "mean",
            Self::Min => "min",
            Self::Max => "max",
            Self::Std => "std",
            Self::Last => "last",
            Self::CountDistinct => "count_distinct",
            Self::TimeSinceLast => "time_since_last",
        }
    }

    /// Whether it reads a value column.
    pub fn reads_column(self) -> bool {
        !matches!(self, Self::Count | Self::TimeSinceLast)
    }

    /// Whether it has a window.
    pub fn windowed(self) -> bool {
        self != Self::TimeSinceLast
    }

    /// Int64 output (else Float64).
    pub fn integer(self) -> bool {
        matches!(self, Self::Count | Self::CountDistinct)
    }
}

impl fmt::Display for Agg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One `[[pipeline.feature]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureSpec {
    /// The output column.
    pub name: String,
    /// The key column(s): one, or several for a compound key.
    pub key: Vec<String>,
    pub agg: Agg,
    /// The value aggregated (none for count and time_since_last).
    pub column: Option<String>,
    /// The window's length in microseconds (0 for time_since_last).
    pub window_us: i64,
}

/// Bounds on keyed state, per pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateLimits {
    /// An event older than its key's newest by more than this (µs) is a
    /// dead letter; within it, out-of-order events follow the window rule.
    pub lateness_us: i64,
    /// Keys held per key set; past it the least recently seen is evicted.
    pub keys_max: usize,
    /// Events a key holds for its windows; past it the oldest are dropped.
    pub events_per_key_max: usize,
}

impl Default for StateLimits {
    fn default() -> Self {
        Self {
            lateness_us: 0,
            keys_max: 1_000_000,
            events_per_key_max: 100_000,
        }
    }
}

/// A feature that cannot be computed on this input.
#[derive(Debug, Error, PartialEq)]
pub enum FeatureError {
    #[error("feature {feature:?}: the input has no column {column:?} (it has {available})")]
    NoColumn {
        feature: String,
        column: String,
        available: String,
    },
    #[error("feature {feature:?}: key column {column:?} is {found}; expected an integer, a string or a boolean")]
    KeyType {
        feature: String,
        column: String,
        found: String,
    },
    #[error("feature {feature:?}: agg {agg} reads column {column:?}, which is {found}; expected a number")]
    NotNumeric {
        feature: String,
        agg: Agg,
        column: String,
        found: String,
    },
    #[error("feature {feature:?}: agg {agg} needs a column to aggregate")]
    NoValueColumn { feature: String, agg: Agg },
    #[error("feature {feature:?}: agg {agg} reads no column; remove column = {column:?}")]
    ExtraColumn {
        feature: String,
        agg: Agg,
        column: String,
    },
    #[error("feature {feature:?}: agg {agg} needs a window longer than 0")]
    NoWindow { feature: String, agg: Agg },
    #[error("feature {feature:?}: time_since_last has no window")]
    ExtraWindow { feature: String },
    #[error("feature {feature:?}: no key column")]
    NoKey { feature: String },
    #[error("feature {feature:?}: the output column {feature:?} exists already (an input column or another feature)")]
    Duplicate { feature: String },
    #[error("features need the pipeline's event_time column")]
    NoEventTime,
    #[error("event_time {column:?} is {found}; expected int64 microseconds since the Unix epoch or a timestamp")]
    EventTimeType { column: String, found: String },
}

/// A window or lateness that is not `N` followed by s, m, h or d.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{text:?}: expected a whole number followed by s, m, h or d (e.g. \"10m\", \"24h\"){why}")]
pub struct DurationError {
    pub text: String,
    pub why: &'static str,
}

/// `"90s"`, `"10m"`, `"24h"`, `"7d"` in microseconds; `"0s"` is 0.
pub fn parse_duration_us(text: &str) -> Result<i64, DurationError> {
    let error = |why| DurationError {
        text: text.to_string(),
        why,
    };
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| error(""))?;
    let (digits, unit) = t.split_at(split);
    let n: i64 = digits.parse().map_err(|_| error(""))?;
    let scale: i64 = match unit {
        "s" => 1_000_000,
        "m" => 60_000_000,
        "h" => 3_600_000_000,
        "d" => 86_400_000_000,
        _ => return Err(error("")),
    };
    n.checked_mul(scale)
        .filter(|us| *us <= 3_650 * 86_400_000_000)
        .ok_or_else(|| error("; at most ten years"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_their_unit_or_not_at_all() {
        assert_eq!(parse_duration_us("90s"), Ok(90_000_000));
        assert_eq!(parse_duration_us("10m"), Ok(600_000_000));
        assert_eq!(parse_duration_us("24h"), Ok(86_400_000_000));
        assert_eq!(parse_duration_us("7d"), Ok(604_800_000_000));
        assert_eq!(parse_duration_us("0s"), Ok(0));
        for bad in ["", "h", "10", "10x", "1.5h", "-1h", "99999999d"] {
            assert!(parse_duration_us(bad).is_err(), "{bad}");
        }
    }
}
