//! Synthetic tweets for the trends example and the `topk` benchmark:
//! hashtags drawn from a Zipf distribution over `tags` ranks (a few very
//! common, a long tail), and now and then a burst — a tail hashtag whose
//! share of the stream rises for a minute and falls over two, as a trend
//! does. `likes` are skewed (most tweets few, some many).

use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::CardGenerator;

/// `tweet_id`, `ts` (µs since the epoch), `hashtag`, `user_id`, `likes`.
pub fn tweet_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("tweet_id", DataType::Int64, false),
        Field::new("ts", DataType::Int64, false),
        Field::new("hashtag", DataType::Utf8, false),
        Field::new("user_id", DataType::Int64, false),
        Field::new("likes", DataType::Int64, false),
    ]))
}

/// The most common hashtags by rank; the rest are `#tag<rank>`.
const HEAD: [&str; 24] = [
    "#news",
    "#music",
    "#football",
    "#ai",
    "#love",
    "#travel",
    "#food",
    "#art",
    "#gaming",
    "#photography",
    "#fitness",
    "#rust",
    "#movies",
    "#weather",
    "#crypto",
    "#science",
    "#books",
    "#nature",
    "#fashion",
    "#tech",
    "#health",
    "#cats",
    "#python",
    "#space",
];

/// A hashtag's name by its rank (0: the most common).
pub fn hashtag(rank: usize) -> String {
    match HEAD.get(rank) {
        Some(h) => (*h).to_string(),
        None => format!("#tag{rank}"),
    }
}

/// A trend: `rank`'s share of events rises linearly to `peak` over
/// `RISE_US` from `start_us`, then falls to 0 over `FALL_US`.
struct Burst {
    rank: usize,
    start_us: i64,
    peak: f64,
}

const RISE_US: i64 = 60_000_000;
const FALL_US: i64 = 120_000_000;
/// Bursts begin this often on average (event time).
const BURST_EVERY_US: f64 = 45e6;

impl Burst {
    fn share(&self, t: i64) -> f64 {
        let dt = t - self.start_us;
        if !(0..RISE_US + FALL_US).contains(&dt) {
            0.0
        } else if dt < RISE_US {
            self.peak * dt as f64 / RISE_US as f64
        } else {
            self.peak * (1.0 - (dt - RISE_US) as f64 / FALL_US as f64)
        }
    }
}

pub struct TweetGenerator {
    rng: CardGenerator,
    next_id: i64,
    clock_us: i64,
    gap_us: f64,
    /// The Zipf distribution's cumulative weights by rank, normalised.
    cdf: Vec<f64>,
    bursts: Vec<Burst>,
    next_burst_us: Option<i64>,
}

impl TweetGenerator {
    /// From `start_us` (event time), one tweet per `gap_us` on average,
    /// hashtags Zipf(`exponent`) over `tags` ranks; `bursts` adds trends.
    pub fn new(
        seed: u64,
        start_us: i64,
        gap_us: f64,
        tags: usize,
        exponent: f64,
        bursts: bool,
    ) -> Self {
        assert!(tags > 0);
        let mut cdf = Vec::with_capacity(tags);
        let mut total = 0.0;
        for r in 1..=tags {
            total += (r as f64).powf(-exponent);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Self {
            rng: CardGenerator::new(seed),
            next_id: 0,
            clock_us: start_us,
            gap_us,
            cdf,
            bursts: Vec::new(),
            next_burst_us: bursts.then_some(start_us + 10_000_000),
        }
    }

    /// A Zipf rank.
    fn zipf(&mut self) -> usize {
        let u = self.rng.uniform();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }

    /// The next tweet's hashtag rank at the current clock.
    fn rank(&mut self) -> usize {
        if let Some(next) = self.next_burst_us {
            if self.clock_us >= next {
                let tail = self.cdf.len().saturating_sub(1000).max(1);
                let rank = (self.cdf.len() - tail) + self.rng.below(tail as u32) as usize;
                let peak = 0.08 + 0.12 * self.rng.uniform();
                self.bursts.push(Burst {
                    rank: rank.min(self.cdf.len() - 1),
                    start_us: self.clock_us,
                    peak,
                });
                self.next_burst_us =
                    Some(self.clock_us + self.rng.exponential(BURST_EVERY_US) as i64);
            }
            let now = self.clock_us;
            self.bursts.retain(|b| now - b.start_us < RISE_US + FALL_US);
            let mut u = self.rng.uniform();
            for b in &self.bursts {
                let share = b.share(now);
                if u < share {
                    return b.rank;
                }
                u -= share;
            }
        }
        self.zipf()
    }

    /// The next `rows` tweets as one batch of [`tweet_schema`].
    pub fn batch(&mut self, rows: usize) -> RecordBatch {
        let mut ids = Vec::with_capacity(rows);
        let mut ts = Vec::with_capacity(rows);
        let mut tags = StringBuilder::with_capacity(rows, rows * 8);
        let mut users = Vec::with_capacity(rows);
        let mut likes = Vec::with_capacity(rows);
        for _ in 0..rows {
            self.clock_us += self.rng.exponential(self.gap_us).round() as i64;
            let rank = self.rank();
            ids.push(self.next_id);
            self.next_id += 1;
            ts.push(self.clock_us);
            tags.append_value(hashtag(rank));
            users.push(self.rng.below(1_000_000) as i64);
            likes.push((self.rng.normal() * 1.5 + 1.0).exp().floor() as i64);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(Int64Array::from(ts)),
            Arc::new(tags.finish()),
            Arc::new(Int64Array::from(users)),
            Arc::new(Int64Array::from(likes)),
        ];
        RecordBatch::try_new(tweet_schema(), columns).expect("built to the schema")
    }
}
