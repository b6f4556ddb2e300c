//! Scratch: parses one CSV file repeatedly on this thread, for `perf record`.
//! `cargo run --release -p roo-bench --example ingest_profile -- FILE [ROUNDS] [csv|ndjson]`

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema};
use roo_ingest::{
    read_file, BatchLimits, CsvHeader, Framer, IngestBatch, ReadOptions, StreamFormat,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = &args[1];
    let rounds: usize = args.get(2).map_or(5, |r| r.parse().unwrap());
    let format = match args.get(3).map(String::as_str) {
        Some("ndjson") => StreamFormat::Ndjson,
        _ => StreamFormat::Csv {
            header: CsvHeader::Skip,
            delimiter: b',',
        },
    };
    let mut fields = vec![Field::new("id", DataType::Int64, true)];
    fields.extend((0..30).map(|i| Field::new(format!("x{i}"), DataType::Float32, true)));
    let schema = Arc::new(Schema::new(fields));
    let bytes = std::fs::metadata(path).unwrap().len() as f64;
    for _ in 0..rounds {
        let t = std::time::Instant::now();
        let file = std::fs::File::open(path).unwrap();
        let limits = BatchLimits {
            max_rows: 65536,
            ..BatchLimits::default()
        };
        let mut framer =
            Framer::new(Arc::from("p"), &format, Some(schema.clone()), limits).unwrap();
        let mut rows = 0;
        let mut sink = |b: IngestBatch| {
            rows += b.batch.num_rows();
            true
        };
        read_file(&file, "p", 0, &ReadOptions::default(), &mut |piece| {
            framer.push(piece, &mut sink);
            true
        })
        .unwrap();
        framer.finish(true, &mut sink);
        let s = t.elapsed().as_secs_f64();
        println!("{rows} rows, {:.0} MB/s", bytes / s / 1e6);
    }
}
