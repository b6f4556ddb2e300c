//! Walking a JSON document with the path to each value at hand, for errors
//! like `learner.gradient_booster.model.trees[3].split_indices: expected an array`.

use serde_json::Value;

use crate::error::{Fault, Result};

#[derive(Clone, Copy)]
pub(crate) struct At<'a> {
    pub value: &'a Value,
    parent: Option<&'a At<'a>>,
    step: Step<'a>,
}

#[derive(Clone, Copy)]
enum Step<'a> {
    Root,
    Key(&'a str),
    Index(usize),
}

impl<'a> At<'a> {
    pub fn root(value: &'a Value) -> Self {
        Self {
            value,
            parent: None,
            step: Step::Root,
        }
    }

    /// The dotted path to this value from the document's root.
    pub fn path(&self) -> String {
        let mut steps = Vec::new();
        let mut at = Some(self);
        while let Some(a) = at {
            steps.push(a.step);
            at = a.parent;
        }
        let mut out = String::new();
        for step in steps.iter().rev() {
            match step {
                Step::Root => {}
                Step::Key(k) if out.is_empty() => out.push_str(k),
                Step::Key(k) => {
                    out.push('.');
                    out.push_str(k);
                }
                Step::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        if out.is_empty() {
            "(document root)".to_string()
        } else {
            out
        }
    }

    pub fn fault(&self, message: impl Into<String>) -> Fault {
        Fault::new(self.path(), message)
    }

    pub fn get(&'a self, key: &'a str) -> Option<At<'a>> {
        self.value.get(key).map(|value| At {
            value,
            parent: Some(self),
            step: Step::Key(key),
        })
    }

    pub fn key(&'a self, key: &'a str) -> Result<At<'a>> {
        self.get(key)
            .ok_or_else(|| self.fault(format!("missing key '{key}'")))
    }

    pub fn items(&'a self) -> Result<Vec<At<'a>>> {
        let array = self
            .value
            .as_array()
            .ok_or_else(|| self.fault(format!("expected an array, found {}", kind(self.value))))?;
        Ok(array
            .iter()
            .enumerate()
            .map(|(i, value)| At {
                value,
                parent: Some(self),
                step: Step::Index(i),
            })
            .collect())
    }

    pub fn str(&self) -> Result<&'a str> {
        self.value
            .as_str()
            .ok_or_else(|| self.fault(format!("expected a string, found {}", kind(self.value))))
    }

    /// A number, or a string holding one (XGBoost writes parameters as strings).
    pub fn f64(&self) -> Result<f64> {
        match self.value {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
        .ok_or_else(|| self.fault(format!("expected a number, found {}", kind(self.value))))
    }

    /// A non-negative integer, or a string holding one.
    pub fn usize(&self) -> Result<usize> {
        match self.value {
            Value::Number(n) => n.as_u64().map(|v| v as usize),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
        .ok_or_else(|| {
            self.fault(format!(
                "expected a non-negative integer, found {}",
                kind(self.value)
            ))
        })
    }

    pub fn f64_array(&'a self) -> Result<Vec<f64>> {
        self.items()?.iter().map(At::f64).collect()
    }

    pub fn i64_array(&'a self) -> Result<Vec<i64>> {
        self.items()?
            .iter()
            .map(|a| {
                a.value
                    .as_i64()
                    .ok_or_else(|| a.fault(format!("expected an integer, found {}", kind(a.value))))
            })
            .collect()
    }

    /// Booleans, or the 0/1 integers XGBoost writes for them.
    pub fn bool_array(&'a self) -> Result<Vec<bool>> {
        self.items()?
            .iter()
            .map(|a| match a.value {
                Value::Bool(b) => Ok(*b),
                Value::Number(n) if n.as_u64() == Some(0) => Ok(false),
                Value::Number(n) if n.as_u64() == Some(1) => Ok(true),
                other => Err(a.fault(format!("expected 0 or 1, found {}", kind(other)))),
            })
            .collect()
    }
}

fn kind(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("{b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.len() > 40 => format!("a string of {} bytes", s.len()),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(a) => format!("an array of {} items", a.len()),
        Value::Object(_) => "an object".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_path_and_what_was_found() {
        let doc: Value =
            serde_json::from_str(r#"{"learner": {"trees": [{"split": "x"}, {"split": [1, 2]}]}}"#)
                .unwrap();
        let root = At::root(&doc);
        let learner = root.key("learner").unwrap();
        let trees = learner.key("trees").unwrap();
        let items = trees.items().unwrap();
        let split = items[0].key("split").unwrap();
        let err = split.f64_array().err().unwrap();
        assert_eq!(err.at, "learner.trees[0].split");
        assert_eq!(err.message, "expected an array, found the string \"x\"");
        let err = items[1].key("missing").err().unwrap();
        assert_eq!(err.at, "learner.trees[1]");
        assert_eq!(err.message, "missing key 'missing'");
    }
}
