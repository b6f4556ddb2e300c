"""Score a pandas DataFrame with a running `roo serve`, over Arrow Flight.

    python examples/python/score_dataframe.py [--address grpc://127.0.0.1:7312]
        [--pipeline cards] [--token NAME:SECRET] [CSV]

Reads CSV (default: the bundled transactions) into a DataFrame, sends it
with DoExchange to the pipeline's model, and prints the riskiest rows. Only
pyarrow (and pandas for the DataFrame) on the client.
"""

import argparse
import pathlib

import pandas as pd
import pyarrow as pa
import pyarrow.flight as flight

HERE = pathlib.Path(__file__).resolve().parent


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv", nargs="?", default=HERE.parent / "fraud" / "transactions.csv")
    ap.add_argument("--address", default="grpc://127.0.0.1:7312")
    ap.add_argument("--pipeline", default="cards")
    ap.add_argument("--token", help="NAME:SECRET of a [[flight.token]], when the server asks for one")
    args = ap.parse_args()

    client = flight.FlightClient(args.address)
    options = flight.FlightCallOptions()
    if args.token:
        name, secret = args.token.split(":", 1)
        options = flight.FlightCallOptions(headers=[client.authenticate_basic_token(name, secret)])

    df = pd.read_csv(args.csv)
    # The model reads float32 features; any numeric type works (roo casts once).
    table = pa.Table.from_pandas(df, preserve_index=False)

    writer, reader = client.do_exchange(flight.FlightDescriptor.for_path(args.pipeline), options)
    replies = []
    with writer:
        writer.begin(table.schema)
        # Replies come in order, one per batch (a huge one may come cut):
        # read each before sending the next so that neither side's buffers
        # fill, whatever the frame's size.
        for batch in table.to_batches(max_chunksize=4096):
            writer.write_batch(batch)
            got = 0
            while got < batch.num_rows:
                replies.append(reader.read_chunk().data)
                got += replies[-1].num_rows
        writer.done_writing()
    scored = pa.Table.from_batches(replies).to_pandas()

    print(f"scored {len(scored)} rows with {scored['model_version'].iloc[0]}")
    key = "txn_id" if "txn_id" in scored else scored.columns[0]
    print(scored.nlargest(5, "score")[[key, "amount", "score"]].to_string(index=False))


if __name__ == "__main__":
    main()
