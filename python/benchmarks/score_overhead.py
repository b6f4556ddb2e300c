"""What the package costs beside a hand-written pyarrow.flight loop: the
same table scored by the same `roo serve`, both ways, alternated, in one
run. Prints rows/s and the client's CPU-ns per row for each.

    ROO_BINARY=target/release/roo python python/benchmarks/score_overhead.py [--rows 2000000] [--rounds 3]
"""

import argparse
import pathlib
import sys
import tempfile
import time

import pyarrow as pa
import pyarrow.flight as flight

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
import roo  # noqa: E402
from conftest import TOKEN, free_port, transactions_like, write_config  # noqa: E402


def by_hand(location: str, table: pa.Table, batch_rows: int) -> int:
    """The loop examples/python/score_dataframe.py shows: one batch out,
    its replies back, in lockstep."""
    client = flight.FlightClient(location)
    name, secret = TOKEN.split(":", 1)
    options = flight.FlightCallOptions(headers=[client.authenticate_basic_token(name, secret)])
    writer, reader = client.do_exchange(flight.FlightDescriptor.for_path("cards"), options)
    rows = 0
    with writer:
        writer.begin(table.schema)
        for batch in table.to_batches(max_chunksize=batch_rows):
            writer.write_batch(batch)
            got = 0
            while got < batch.num_rows:
                got += reader.read_chunk().data.num_rows
            rows += got
        writer.done_writing()
    client.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-rows", type=int, default=65_536)
    args = ap.parse_args()
    table = transactions_like(args.rows)
    work = pathlib.Path(tempfile.mkdtemp(prefix="roo-overhead-"))
    with roo.serve(write_config(work, free_port())) as server, server.connect(TOKEN) as c:
        ways = {
            "roo.Client.score (pyarrow Table)": lambda: c.score(table, pipeline="cards",
                                                                batch_rows=args.batch_rows).num_rows,
            "hand-written pyarrow.flight loop": lambda: by_hand(server.flight, table, args.batch_rows),
        }
        results: dict[str, list[tuple[float, float]]] = {k: [] for k in ways}
        for _ in range(args.rounds):
            for name, way in ways.items():
                wall, cpu = time.perf_counter(), time.process_time()
                rows = way()
                assert rows == args.rows, (name, rows)
                results[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    print(f"{args.rows} rows of {table.num_columns} columns, batches of {args.batch_rows}, "
          f"best of {args.rounds} alternated rounds (client process only):")
    for name, runs in results.items():
        wall, cpu = min(runs)
        print(f"  {name:36s} {args.rows / wall / 1e6:6.2f} M rows/s   {cpu * 1e9 / args.rows:6.0f} client CPU-ns/row")


if __name__ == "__main__":
    main()
