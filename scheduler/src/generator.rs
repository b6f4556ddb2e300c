//! Synthetic card transactions for demos and benchmarks: a `txn_id` and the
//! 30 features of `bench/python/cardgen.py` (same names, similar
//! distributions, 2% missing in four columns), at a set rate or flat out.

use std::sync::Arc;

use arrow_array::{ArrayRef, Float32Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

/// The features, in the order the bundled models were trained on.
pub const CARD_FEATURES: [&str; 30] = [
    "amount",
    "amount_log",
    "hour_of_day",
    "day_of_week",
    "merchant_category",
    "merchant_risk",
    "distance_from_home_km",
    "distance_from_last_km",
    "card_age_days",
    "account_age_days",
    "txn_count_1h",
    "txn_count_24h",
    "spend_1h",
    "spend_24h",
    "spend_7d_avg",
    "amount_over_avg",
    "is_online",
    "is_international",
    "chip_used",
    "pin_used",
    "device_trust",
    "ip_risk",
    "velocity_score",
    "failed_attempts_24h",
    "country_mismatch",
    "new_merchant",
    "night_time",
    "cross_border_fee",
    "credit_utilisation",
    "prior_chargebacks",
];

/// `txn_id` (Int64) then the 30 features (Float32).
pub fn card_schema() -> SchemaRef {
    let mut fields = vec![Field::new("txn_id", DataType::Int64, false)];
    fields.extend(
        CARD_FEATURES
            .iter()
            .map(|n| Field::new(*n, DataType::Float32, true)),
    );
    Arc::new(Schema::new(fields))
}

/// A deterministic stream of card transactions.
pub struct CardGenerator {
    state: u64,
    next_id: i64,
}

impl CardGenerator {
    pub fn new(seed: u64) -> Self {
        Self {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            next_id: 0,
        }
    }

    fn uniform(&mut self) -> f64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        ((self.state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    fn exponential(&mut self, mean: f64) -> f64 {
        -mean * self.uniform().ln()
    }

    fn poisson(&mut self, lambda: f64) -> f64 {
        let limit = (-lambda).exp();
        let mut k = 0.0;
        let mut p = self.uniform();
        while p > limit && k < 100.0 {
            k += 1.0;
            p *= self.uniform();
        }
        k
    }

    fn below(&mut self, n: u32) -> f64 {
        (self.uniform() * n as f64).floor()
    }

    /// The next `rows` transactions as one batch of [`card_schema`].
    pub fn batch(&mut self, rows: usize) -> RecordBatch {
        let mut columns: Vec<Vec<f32>> = vec![Vec::with_capacity(rows); CARD_FEATURES.len()];
        let ids: Vec<i64> = (self.next_id..self.next_id + rows as i64).collect();
        self.next_id += rows as i64;
        for _ in 0..rows {
            let amount = (3.5 + 1.2 * self.normal()).exp();
            let hour = self.below(24);
            let values = [
                amount,
                amount.ln_1p(),
                hour,
                self.below(7),
                self.below(40),
                self.uniform().powf(2.5) * 0.6,
                self.exponential(20.0),
                self.exponential(35.0),
                1.0 + self.below(2999),
                1.0 + self.below(5999),
                self.poisson(0.7),
                self.poisson(4.0),
                (2.5 + 1.5 * self.normal()).exp(),
                (4.0 + 1.2 * self.normal()).exp(),
                (3.4 + 0.8 * self.normal()).exp(),
                1.0 + 0.6 * self.normal(),
                self.below(2),
                (self.uniform() < 0.1) as u8 as f64,
                self.below(2),
                self.below(2),
                self.uniform(),
                self.uniform().powf(3.0) * 0.8,
                self.exponential(1.0) + self.exponential(1.0),
                self.poisson(0.2),
                (self.uniform() < 0.07) as u8 as f64,
                (self.uniform() < 0.3) as u8 as f64,
                (!(6.0..=22.0).contains(&hour)) as u8 as f64,
                self.exponential(0.5),
                self.uniform(),
                self.poisson(0.1),
            ];
            for (j, (column, v)) in columns.iter_mut().zip(values).enumerate() {
                let missing = matches!(j, 6 | 14 | 20 | 21) && self.uniform() < 0.02;
                column.push(if missing { f32::NAN } else { v as f32 });
            }
        }
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(ids))];
        arrays.extend(
            columns
                .into_iter()
                .map(|c| Arc::new(Float32Array::from(c)) as ArrayRef),
        );
        RecordBatch::try_new(card_schema(), arrays).expect("built to the schema")
    }
}
