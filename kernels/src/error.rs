//! Typed errors of model loading and scoring.

use thiserror::Error;

/// A model file that could not be read or is not a model roo can score.
///
/// The message names the file, where in it the problem is, and what was
/// expected: `reading model fraud.json: learner.gradient_booster.model.trees[17]:
/// node 4: feature index 41 but the model has 30 features`.
#[derive(Debug, Error)]
pub enum ModelError {
    /// The I/O error is part of the message, not a separate cause, so a
    /// chain of errors says it once.
    #[error("reading model {origin}: {error}")]
    Io {
        origin: String,
        error: std::io::Error,
    },
    #[error("reading model {origin}: {}{message}", at_prefix(.at))]
    Invalid {
        origin: String,
        /// Where in the file: a JSON path, a line number, a tree and node.
        at: String,
        message: String,
    },
}

fn at_prefix(at: &str) -> String {
    if at.is_empty() {
        String::new()
    } else {
        format!("{at}: ")
    }
}

/// A problem found inside a model file, before the file's name is attached.
#[derive(Debug)]
pub(crate) struct Fault {
    pub at: String,
    pub message: String,
}

impl Fault {
    pub fn new(at: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            at: at.into(),
            message: message.into(),
        }
    }

    pub fn into_error(self, origin: &str) -> ModelError {
        ModelError::Invalid {
            origin: origin.to_string(),
            at: self.at,
            message: self.message,
        }
    }
}

pub(crate) type Result<T, E = Fault> = std::result::Result<T, E>;

/// Input that does not fit the model: raised when a scorer is bound to a schema.
#[derive(Debug, Error, PartialEq)]
pub enum BindError {
    #[error("the model needs feature '{feature}' but the input has no such column (input columns: {available})")]
    MissingFeature { feature: String, available: String },
    #[error(
        "the model reads its {needed} features by position, but the input has only {found} columns"
    )]
    TooFewColumns { needed: usize, found: usize },
    #[error(
        "feature '{feature}' is column '{column}' of type {data_type}; expected a numeric column"
    )]
    NotNumeric {
        feature: String,
        column: String,
        data_type: String,
    },
    #[error("the input already has a column named '{0}', which the scores would overwrite")]
    OutputClash(String),
}
