"""Stream a CSV file through a running `roo serve` and write the scores.

    python examples/python/stream_csv.py [--address grpc://127.0.0.1:7312]
        [--pipeline cards] [--token NAME:SECRET] [--block-mb 1] CSV OUT.csv

Reads the CSV incrementally (pyarrow.csv.open_csv), sends each block with
DoExchange as it is read, and appends each scored batch to OUT.csv as it
comes back: memory stays at a few blocks whatever the file's size. Only
pyarrow on the client.
"""

import argparse
import time

import pyarrow.csv as pacsv
import pyarrow.flight as flight


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv")
    ap.add_argument("out")
    ap.add_argument("--address", default="grpc://127.0.0.1:7312")
    ap.add_argument("--pipeline", default="cards")
    ap.add_argument("--token", help="NAME:SECRET of a [[flight.token]], when the server asks for one")
    ap.add_argument("--block-mb", type=float, default=1.0)
    args = ap.parse_args()

    client = flight.FlightClient(args.address)
    options = flight.FlightCallOptions()
    if args.token:
        name, secret = args.token.split(":", 1)
        options = flight.FlightCallOptions(headers=[client.authenticate_basic_token(name, secret)])

    blocks = pacsv.open_csv(args.csv, read_options=pacsv.ReadOptions(block_size=int(args.block_mb * (1 << 20))))
    started, rows = time.perf_counter(), 0
    writer, reader = client.do_exchange(flight.FlightDescriptor.for_path(args.pipeline), options)
    out = None
    with writer:
        writer.begin(blocks.schema)
        for batch in blocks:
            writer.write_batch(batch)
            got = 0
            while got < batch.num_rows:  # replies in order, one per batch (a huge one may come cut)
                scored = reader.read_chunk().data
                if out is None:
                    out = pacsv.CSVWriter(args.out, scored.schema)
                out.write_batch(scored)
                got += scored.num_rows
            rows += got
        writer.done_writing()
    if out is not None:
        out.close()
    elapsed = time.perf_counter() - started
    print(f"scored {rows} rows in {elapsed:.2f} s ({rows / elapsed:,.0f} rows/s) into {args.out}")


if __name__ == "__main__":
    main()
