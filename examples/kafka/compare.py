"""Stream versus batch: the scored events three Kafka members wrote
(DIR of Parquet files named by partition and offsets) against the same
events scored in one batch by `roo score --config` (BATCH): every event
once, every column equal bit for bit.

    python3 examples/kafka/compare.py examples/kafka/out/scores examples/kafka/out/batch.parquet
"""
import pathlib
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def main(stream_dir, batch_path):
    files = sorted(p for p in pathlib.Path(stream_dir).glob("part-*.parquet"))
    stream = pa.concat_tables([pq.read_table(f) for f in files]).combine_chunks()
    batch = pq.read_table(batch_path).combine_chunks()
    ids = stream.column("txn_id")
    if pc.count_distinct(ids).as_py() != len(ids):
        sys.exit(f"the stream holds {len(ids) - pc.count_distinct(ids).as_py()} events twice")
    if len(ids) != batch.num_rows:
        sys.exit(f"the stream holds {len(ids)} events, the batch {batch.num_rows}")
    stream = stream.sort_by("txn_id")
    batch = batch.sort_by("txn_id")
    differ = []
    for name in batch.column_names:
        if name not in stream.column_names:
            differ.append(f"{name} (not in the stream)")
            continue
        a, b = stream.column(name), batch.column(name)
        if a.type != b.type or not a.equals(b):
            differ.append(name)
    if differ:
        sys.exit(f"stream and batch differ in {differ}")
    print(f"stream == batch: {batch.num_rows} events once each, {len(batch.column_names)} columns "
          f"equal bit for bit ({len(files)} files from the members, one batch run)")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
