//! Synthetic card transactions for demos and benchmarks: [`CardGenerator`],
//! a `txn_id` and the 30 ready-made features of `bench/python/cardgen.py`
//! (same names, similar distributions, 2% missing in four columns); and
//! [`TransactionGenerator`], raw transactions (card, merchant, time,
//! amount) for roo to compute features from; and, in `tweets.rs`,
//! [`TweetGenerator`], tweets with Zipf hashtags and trends.

mod tweets;

use std::sync::Arc;

use arrow_array::{ArrayRef, Float32Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

pub use tweets::{hashtag, tweet_schema, TweetGenerator};

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

/// The raw transactions a card network sends, before any feature: what
/// rolling features are computed from.
pub const TRANSACTION_COLUMNS: [&str; 9] = [
    "txn_id",
    "card_id",
    "merchant_id",
    "ts",
    "amount",
    "merchant_category",
    "hour_of_day",
    "is_online",
    "is_international",
];

/// `txn_id`, `card_id`, `merchant_id`, `ts` (Int64: µs since the epoch),
/// then `amount`, `merchant_category`, `hour_of_day`, `is_online`,
/// `is_international` (Float32).
pub fn transaction_schema() -> SchemaRef {
    let fields: Vec<Field> = TRANSACTION_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let t = if i < 4 {
                DataType::Int64
            } else {
                DataType::Float32
            };
            Field::new(*n, t, false)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// A compromised card: its next events come fast, large and at new merchants.
struct Burst {
    card: i64,
    left: u32,
}

/// Raw card transactions (`examples/fraud/make_history.py` writes the
/// same kind offline): `cards` cards whose activity is skewed (a few very
/// busy, most quiet), merchants skewed likewise, events `gap_us` apart on
/// average (exponential), and now and then a burst of fraud on one card:
/// 5 to 15 large transactions seconds apart at many merchants.
pub struct TransactionGenerator {
    rng: CardGenerator,
    next_id: i64,
    clock_us: i64,
    gap_us: f64,
    cards: u32,
    merchants: u32,
    bursts: Vec<Burst>,
}

impl TransactionGenerator {
    /// Starts at `start_us` (event time), one event per `gap_us` on average.
    pub fn new(seed: u64, start_us: i64, gap_us: f64) -> Self {
        Self {
            rng: CardGenerator::new(seed),
            next_id: 0,
            clock_us: start_us,
            gap_us,
            cards: 20_000,
            merchants: 2_000,
            bursts: Vec::new(),
        }
    }

    /// A skewed draw in 0..n: low ids are the busy ones.
    fn skewed(&mut self, n: u32, power: f64) -> i64 {
        ((self.rng.uniform().powf(power) * n as f64) as i64).min(n as i64 - 1)
    }

    /// The next `rows` transactions as one batch of [`transaction_schema`].
    pub fn batch(&mut self, rows: usize) -> RecordBatch {
        let mut ints: [Vec<i64>; 4] = std::array::from_fn(|_| Vec::with_capacity(rows));
        let mut floats: [Vec<f32>; 5] = std::array::from_fn(|_| Vec::with_capacity(rows));
        for _ in 0..rows {
            let fraud_next = !self.bursts.is_empty() && self.rng.uniform() < 0.3;
            let (card, fraud) = if fraud_next {
                let i = self.rng.below(self.bursts.len() as u32) as usize;
                let card = self.bursts[i].card;
                self.bursts[i].left -= 1;
                if self.bursts[i].left == 0 {
                    self.bursts.swap_remove(i);
                }
                (card, true)
            } else {
                (self.skewed(self.cards, 3.0), false)
            };
            if !fraud && self.bursts.len() < 4 && self.rng.uniform() < 0.0005 {
                let left = 5 + self.rng.below(11) as u32;
                self.bursts.push(Burst { card, left });
            }
            self.clock_us += self.rng.exponential(self.gap_us).round() as i64;
            let merchant = if fraud {
                self.rng.below(self.merchants) as i64
            } else {
                self.skewed(self.merchants, 2.0)
            };
            let amount = (3.5 + 1.1 * self.rng.normal()).exp() * if fraud { 6.0 } else { 1.0 };
            let hour = ((self.clock_us / 3_600_000_000) % 24) as f32;
            ints[0].push(self.next_id);
            ints[1].push(card);
            ints[2].push(merchant);
            ints[3].push(self.clock_us);
            self.next_id += 1;
            floats[0].push(((amount * 100.0).round() / 100.0) as f32);
            floats[1].push((merchant % 40) as f32);
            floats[2].push(hour);
            floats[3].push((self.rng.uniform() < if fraud { 0.8 } else { 0.3 }) as u8 as f32);
            floats[4].push((self.rng.uniform() < if fraud { 0.4 } else { 0.05 }) as u8 as f32);
        }
        let mut arrays: Vec<ArrayRef> = ints
            .into_iter()
            .map(|c| Arc::new(Int64Array::from(c)) as ArrayRef)
            .collect();
        arrays.extend(
            floats
                .into_iter()
                .map(|c| Arc::new(Float32Array::from(c)) as ArrayRef),
        );
        RecordBatch::try_new(transaction_schema(), arrays).expect("built to the schema")
    }
}
