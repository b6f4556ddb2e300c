//! Tensors into columns and back: raw bytes, the matrix form, bad
//! requests, reply columns.

use super::*;
use arrow_schema::{Field, Schema, TimeUnit};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("card", DataType::Utf8, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("amount", DataType::Float32, true),
    ]))
}

#[test]
fn raw_bytes_round_trip_every_datatype() {
    for v in [
        Values::Bool(vec![true, false, true]),
        Values::I32(vec![-1, 0, i32::MAX]),
        Values::I64(vec![i64::MIN, 7]),
        Values::F32(vec![1.5, f32::MIN_POSITIVE, -0.0]),
        Values::F64(vec![1e300, -2.5]),
        Values::Bytes(vec![
            b"card-1".to_vec(),
            Vec::new(),
            "é".as_bytes().to_vec(),
        ]),
    ] {
        let raw = v.to_raw();
        assert_eq!(Values::from_raw("x", v.datatype(), &raw).unwrap(), v);
    }
    let e = Values::from_raw("x", "BYTES", &[9, 0, 0, 0, b'a']).unwrap_err();
    assert!(e.to_string().contains("says 9 bytes; 1 are left"), "{e}");
    let e = Values::from_raw("x", "FP32", &[0; 6]).unwrap_err();
    assert!(
        e.to_string().contains("not a whole number of 4-byte"),
        "{e}"
    );
    let e = Values::from_raw("x", "FP16", &[0; 2]).unwrap_err();
    assert!(e.to_string().contains("expected FP32, FP64"), "{e}");
}

#[test]
fn columns_by_name_and_the_arrival_time() {
    let s = schema();
    let target = Target {
        pipeline: "p",
        schema: &s,
        features: None,
        event_time: Some("ts"),
    };
    let b = to_batch(
        &target,
        vec![
            Input {
                name: "amount".into(),
                shape: vec![2],
                values: Values::F64(vec![1.25, 2.5]),
            },
            Input {
                name: "card".into(),
                shape: vec![2, 1],
                values: Values::Bytes(vec![b"a".to_vec(), b"b".to_vec()]),
            },
        ],
    )
    .unwrap();
    assert_eq!(b.num_rows(), 2);
    assert_eq!(b.column(0).as_string::<i32>().value(1), "b");
    assert_eq!(
        b.column(2).as_primitive::<Float32Type>().values(),
        &[1.25f32, 2.5]
    );
    assert_eq!(b.column(1).null_count(), 0);
}

#[test]
fn a_matrix_in_the_models_feature_order() {
    let s: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("a", DataType::Float32, true),
        Field::new("b", DataType::Float32, true),
    ]));
    let features = vec!["b".to_string(), "a".to_string()];
    let target = Target {
        pipeline: "p",
        schema: &s,
        features: Some(&features),
        event_time: None,
    };
    let b = to_batch(
        &target,
        vec![Input {
            name: "input-0".into(),
            shape: vec![2, 2],
            values: Values::F32(vec![1.0, 2.0, 3.0, 4.0]),
        }],
    )
    .unwrap();
    // Row-major [[b0, a0], [b1, a1]].
    assert_eq!(
        b.column(0).as_primitive::<Float32Type>().values(),
        &[2.0f32, 4.0]
    );
    assert_eq!(
        b.column(1).as_primitive::<Float32Type>().values(),
        &[1.0f32, 3.0]
    );
    // One event: each column a slice of the one buffer.
    let b = to_batch(
        &target,
        vec![Input {
            name: "input-0".into(),
            shape: vec![1, 2],
            values: Values::F32(vec![5.0, 6.0]),
        }],
    )
    .unwrap();
    assert_eq!(
        b.column(0).as_primitive::<Float32Type>().values(),
        &[6.0f32]
    );
    assert_eq!(
        b.column(1).as_primitive::<Float32Type>().values(),
        &[5.0f32]
    );
}

#[test]
fn bad_requests_say_what_was_expected() {
    let s = schema();
    let target = Target {
        pipeline: "p",
        schema: &s,
        features: None,
        event_time: None,
    };
    let one = |name: &str, shape: Vec<i64>, values: Values| Input {
        name: name.into(),
        shape,
        values,
    };
    let cases: Vec<(Vec<Input>, &str)> = vec![
        (
            vec![one("amount", vec![3], Values::F32(vec![1.0]))],
            "shape [3] holds 3 elements; the data has 1",
        ),
        (
            vec![
                one("amount", vec![1], Values::Bytes(vec![b"x".to_vec()])),
                one("card", vec![1], Values::Bytes(vec![b"c".to_vec()])),
                one("ts", vec![1], Values::I64(vec![1])),
            ],
            "input amount is BYTES; its column is Float32: expected FP32, FP64, INT32 or INT64",
        ),
        (
            vec![one("amount", vec![1], Values::F32(vec![1.0]))],
            "missing input card: model p takes [card BYTES, ts INT64, amount FP32]",
        ),
        (
            vec![one("nope", vec![1], Values::F32(vec![1.0]))],
            "input nope: model p has no such input",
        ),
        (
            vec![
                one("amount", vec![1], Values::F32(vec![1.0])),
                one(
                    "card",
                    vec![2],
                    Values::Bytes(vec![b"c".to_vec(), b"d".to_vec()]),
                ),
            ],
            "input card has 2 rows; input amount has 1",
        ),
    ];
    for (inputs, expected) in cases {
        let e = to_batch(&target, inputs).unwrap_err();
        assert!(e.to_string().contains(expected), "{e} lacks {expected}");
        assert_eq!(e.status(), 400);
    }
}

#[test]
fn reply_columns_become_tensors() {
    // The request's rows are 1 and 2 of a coalesced batch of 3.
    let batch = RecordBatch::try_from_iter([
        (
            "score",
            Arc::new(Float32Array::from(vec![Some(9.0), Some(0.5), None])) as ArrayRef,
        ),
        (
            "n",
            Arc::new(Int64Array::from(vec![Some(9), Some(3), None])) as ArrayRef,
        ),
        (
            "score_candidate",
            Arc::new(Float32Array::from(vec![9.0, 0.25, 0.75])) as ArrayRef,
        ),
    ])
    .unwrap();
    let batch = Reply {
        batch: Arc::new(batch),
        offset: 1,
        len: 2,
    };
    let out = outputs(&batch, &[]).unwrap();
    assert_eq!(
        out.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(),
        ["score", "score_candidate"]
    );
    match &out[0].values {
        Values::F32(v) => assert!(v[0] == 0.5 && v[1].is_nan()),
        other => panic!("{other:?}"),
    }
    let out = outputs(&batch, &["n".to_string()]).unwrap();
    assert_eq!(out[0].values, Values::I64(vec![3, 0]));
    let e = outputs(&batch, &["zz".to_string()]).unwrap_err();
    assert!(
        e.to_string()
            .contains("output zz: no such output; the reply has [score, n, score_candidate]"),
        "{e}"
    );
}
