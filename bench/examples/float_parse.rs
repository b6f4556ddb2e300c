//! Scratch: the cost of number parsing alone, per field, on one CSV file.
use roo_ingest::parse::number::{parse_f32, parse_f32_prefix};

fn main() {
    let path = std::env::args().nth(1).unwrap();
    let data = std::fs::read(path).unwrap();
    let body = &data[data.iter().position(|&c| c == b'\n').unwrap() + 1..];
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let (mut p, mut n, mut sum) = (0usize, 0usize, 0f32);
        while p < body.len() {
            match parse_f32_prefix(body, p) {
                Some((v, e)) => {
                    sum += v;
                    p = e + 1;
                }
                None => p += 1,
            }
            n += 1;
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "prefix: {n} fields {:.1} ns/field {:.0} MB/s ({sum})",
            s * 1e9 / n as f64,
            body.len() as f64 / s / 1e6
        );
        let t = std::time::Instant::now();
        let mut n = 0;
        let mut sum = 0f32;
        for line in body.split(|&c| c == b'\n') {
            for f in line.split(|&c| c == b',') {
                if let Some(v) = parse_f32(f) {
                    sum += v;
                }
                n += 1;
            }
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "split+parse: {n} fields {:.1} ns/field ({sum})",
            s * 1e9 / n as f64
        );
    }
}
