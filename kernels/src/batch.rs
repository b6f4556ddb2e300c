//! Scoring Arrow record batches: binding a model's features to a schema's
//! columns, reading them as f32 without copying where Arrow allows, and
//! appending the score columns.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use arrow_array::{Array, ArrayRef, Float32Array, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};

use crate::error::BindError;
use crate::model::Model;

/// Which input column feeds each model feature, checked once per schema.
#[derive(Clone, Debug)]
pub struct FeatureBinding {
    columns: Vec<usize>,
    output_schema: SchemaRef,
}

impl FeatureBinding {
    /// Binds by name, or by position (the first `n` columns) when the model
    /// has no feature names. Fails before any row is read when a feature is
    /// missing or not numeric, or a score column would overwrite an input.
    pub fn new(model: &Model, schema: &Schema) -> Result<Self, BindError> {
        Self::with_outputs(model, schema, &model.output_names(), "roo.model.version")
    }

    /// As [`Self::new`], with the score columns named `outputs` (one per
    /// model output) and the model's version kept in the schema metadata
    /// under `version_key`: a second model scoring the same rows (a shadow)
    /// writes columns of its own beside the first's.
    pub fn with_outputs(
        model: &Model,
        schema: &Schema,
        outputs: &[String],
        version_key: &str,
    ) -> Result<Self, BindError> {
        assert_eq!(
            outputs.len(),
            model.n_outputs(),
            "one output column per model output"
        );
        let fields = schema.fields();
        let columns = Self::feature_columns(model, schema)?;
        for (feature, &c) in model.feature_names.iter().zip(&columns) {
            let field = &fields[c];
            if !is_numeric(field.data_type()) {
                return Err(BindError::NotNumeric {
                    feature: feature.clone(),
                    column: field.name().clone(),
                    data_type: field.data_type().to_string(),
                });
            }
        }
        let mut out_fields: Vec<Arc<Field>> = fields.iter().cloned().collect();
        for name in outputs {
            if schema.index_of(name).is_ok() {
                return Err(BindError::OutputClash(name.clone()));
            }
            out_fields.push(Arc::new(Field::new(name, DataType::Float32, false)));
        }
        let mut metadata = schema.metadata().clone();
        metadata.insert(version_key.to_string(), model.version.to_string());
        Ok(Self {
            columns,
            output_schema: Arc::new(Schema::new_with_metadata(out_fields, metadata)),
        })
    }

    /// Which columns of `schema` hold the model's features, by name or by
    /// position, without checking their types: a reader uses this to parse
    /// exactly those columns as numbers before binding.
    pub fn feature_columns(model: &Model, schema: &Schema) -> Result<Vec<usize>, BindError> {
        if model.named_features {
            model
                .feature_names
                .iter()
                .map(|name| {
                    schema
                        .index_of(name)
                        .map_err(|_| BindError::MissingFeature {
                            feature: name.clone(),
                            available: list_columns(schema),
                        })
                })
                .collect()
        } else if schema.fields().len() < model.n_features() {
            Err(BindError::TooFewColumns {
                needed: model.n_features(),
                found: schema.fields().len(),
            })
        } else {
            Ok((0..model.n_features()).collect())
        }
    }

    /// Input column index of each model feature, in the model's order.
    pub fn columns(&self) -> &[usize] {
        &self.columns
    }

    /// The input schema plus the score columns, with the model's version in
    /// the schema metadata (`roo.model.version`).
    pub fn output_schema(&self) -> &SchemaRef {
        &self.output_schema
    }

    /// The feature columns as f32 with missing values as NaN. A Float32 column
    /// without nulls is shared, not copied; other numeric types are cast once.
    pub fn feature_arrays(&self, batch: &RecordBatch) -> Result<Vec<Float32Array>, ArrowError> {
        self.columns
            .iter()
            .map(|&c| as_f32_with_nan(batch.column(c)))
            .collect()
    }

    /// Appends score columns (one array per model output) to `batch`.
    pub fn with_scores(
        &self,
        batch: &RecordBatch,
        scores: Vec<Float32Array>,
    ) -> Result<RecordBatch, ArrowError> {
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns.extend(scores.into_iter().map(|a| Arc::new(a) as ArrayRef));
        RecordBatch::try_new(self.output_schema.clone(), columns)
    }
}

fn is_numeric(t: &DataType) -> bool {
    t.is_numeric() || matches!(t, DataType::Boolean | DataType::Null)
}

fn list_columns(schema: &Schema) -> String {
    const SHOWN: usize = 12;
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    if names.len() <= SHOWN {
        names.join(", ")
    } else {
        format!(
            "{}, … {} more",
            names[..SHOWN].join(", "),
            names.len() - SHOWN
        )
    }
}

fn as_f32_with_nan(array: &ArrayRef) -> Result<Float32Array, ArrowError> {
    let f32s = if array.data_type() == &DataType::Float32 {
        array.as_primitive::<Float32Type>().clone()
    } else {
        arrow_cast::cast(array, &DataType::Float32)?
            .as_primitive::<Float32Type>()
            .clone()
    };
    if f32s.null_count() == 0 {
        return Ok(f32s);
    }
    // Arrow leaves any value under a null; the scorers read NaN as missing.
    Ok(f32s.iter().map(|v| Some(v.unwrap_or(f32::NAN))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LinearModel, Link, ModelBody, ModelFormat, ModelVersion};
    use arrow_array::{Int64Array, StringArray};

    fn model(named: bool) -> Model {
        Model {
            version: ModelVersion::of_bytes(b"m"),
            format: ModelFormat::LinearJson,
            feature_names: vec!["a".into(), "b".into()],
            named_features: named,
            body: ModelBody::Linear(LinearModel {
                weights: vec![1.0, 1.0],
                bias: vec![0.0],
                link: Link::Identity,
            }),
        }
    }

    fn batch() -> RecordBatch {
        RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(StringArray::from(vec!["x", "y"])) as ArrayRef,
            ),
            (
                "b",
                Arc::new(Int64Array::from(vec![Some(1), None])) as ArrayRef,
            ),
            (
                "a",
                Arc::new(Float32Array::from(vec![0.5, 1.5])) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    #[test]
    fn binds_by_name_shares_float32_and_casts_the_rest() {
        let b = batch();
        let binding = FeatureBinding::new(&model(true), &b.schema()).unwrap();
        assert_eq!(binding.columns(), &[2, 1]);
        let arrays = binding.feature_arrays(&b).unwrap();
        let a_in = b.column(2).as_primitive::<Float32Type>();
        assert_eq!(
            arrays[0].values().as_ptr(),
            a_in.values().as_ptr(),
            "a Float32 column without nulls is not copied"
        );
        assert_eq!(arrays[1].value(0), 1.0);
        assert!(arrays[1].value(1).is_nan(), "null becomes NaN");
    }

    #[test]
    fn refuses_missing_non_numeric_and_clashing_columns() {
        let b = batch();
        let mut m = model(true);
        m.feature_names[1] = "c".into();
        assert_eq!(
            FeatureBinding::new(&m, &b.schema()).unwrap_err().to_string(),
            "the model needs feature 'c' but the input has no such column (input columns: id, b, a)"
        );
        let err = FeatureBinding::new(&model(false), &b.schema()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "feature 'a' is column 'id' of type Utf8; expected a numeric column"
        );
        let scored = RecordBatch::try_from_iter([
            ("a", Arc::new(Float32Array::from(vec![0.5])) as ArrayRef),
            ("b", Arc::new(Float32Array::from(vec![0.5])) as ArrayRef),
            ("score", Arc::new(Float32Array::from(vec![0.5])) as ArrayRef),
        ])
        .unwrap();
        assert_eq!(
            FeatureBinding::new(&model(true), &scored.schema()).unwrap_err(),
            BindError::OutputClash("score".into())
        );
    }
}
