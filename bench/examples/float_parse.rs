//! The number parser alone on every field of one CSV file, beside the
//! fastest correctly rounded parsers in the Rust registry (fast-float2,
//! lexical-core) and `str::parse`, each field's bounds known (as the CSV
//! index gives them) and all four checked to agree bit for bit:
//!
//!     cargo run --release -p roo-bench --example float_parse -- FILE.csv
use roo_ingest::parse::number::{parse_f32, parse_f32_field_sse41, parse_f32_prefix};

/// A field parser: the file's bytes and the field's bounds.
type Parse<'a> = &'a dyn Fn(&[u8], usize, usize) -> Option<f32>;

fn main() {
    let path = std::env::args().nth(1).expect("a CSV file");
    let data = std::fs::read(path).expect("readable");
    let body = &data[data.iter().position(|&c| c == b'\n').expect("a header") + 1..];
    // Every field's bounds, as the structural pass would give them.
    let mut fields = Vec::new();
    let mut start = 0;
    for (i, &c) in body.iter().enumerate() {
        if c == b',' || c == b'\n' {
            fields.push((start, i));
            start = i + 1;
        }
    }
    let n = fields.len();
    let time = |name: &str, f: Parse| -> Vec<u32> {
        let mut best = f64::INFINITY;
        let mut bits = Vec::new();
        for _ in 0..3 {
            let mut out = Vec::with_capacity(n);
            let t = std::time::Instant::now();
            for &(s, e) in &fields {
                out.push(f(body, s, e).map_or(u32::MAX, f32::to_bits));
            }
            best = best.min(t.elapsed().as_secs_f64());
            bits = out;
        }
        println!(
            "{name:<34} {n} fields {:>5.1} ns/field {:>5.0} MB/s",
            best * 1e9 / n as f64,
            body.len() as f64 / best / 1e6
        );
        bits
    };
    let roo = time(
        "roo parse_f32_prefix",
        &|b, s, e| match parse_f32_prefix(b, s) {
            Some((v, end)) if end == e => Some(v),
            _ => parse_f32(&b[s..e]),
        },
    );
    #[target_feature(enable = "ssse3,sse4.1")]
    unsafe fn field(b: &[u8], s: usize, e: usize) -> Option<f32> {
        match parse_f32_field_sse41(b, s, e) {
            Some(v) => Some(v),
            None => match parse_f32_prefix(b, s) {
                Some((v, end)) if end == e => Some(v),
                _ => parse_f32(&b[s..e]),
            },
        }
    }
    let simd = time("roo parse_f32_field_sse41", &|b, s, e| unsafe {
        field(b, s, e)
    });
    let fast = time("fast-float2 parse", &|b, s, e| {
        fast_float2::parse::<f32, _>(&b[s..e]).ok()
    });
    let lexical = time("lexical-core parse", &|b, s, e| {
        lexical_core::parse::<f32>(&b[s..e]).ok()
    });
    let std = time("str::parse", &|b, s, e| {
        std::str::from_utf8(&b[s..e]).ok()?.parse().ok()
    });
    for (name, other) in [
        ("parse_f32_field_sse41", &simd),
        ("fast-float2", &fast),
        ("lexical-core", &lexical),
        ("str::parse", &std),
    ] {
        let differ = roo.iter().zip(other.iter()).filter(|(a, b)| a != b).count();
        println!("fields where roo and {name} differ: {differ}");
    }
}
