"""Puts tweets into a running `roo serve` (pipeline "t": a Flight source,
the top 5 hashtags by tweets over 60 s every 10 s, lateness 2 s) with the
real pyarrow.flight client, then polls DoGet {"pipeline": "t", "stream":
"latest"} until it holds the last window the watermark closed, and
compares it with pandas.

    trends_latest.py ADDRESS TWEETS_PY
"""
import json
import sys
import time

import pandas as pd
import pyarrow as pa
import pyarrow.flight as flight

from trends_common import accepted, load_tweets, window

address, tweets_py = sys.argv[1], sys.argv[2]
US = 1_000_000
EVERY, LENGTH, LATENESS = 10 * US, 60 * US, 2 * US
tweets = load_tweets(tweets_py)
events = pd.DataFrame(tweets.tweets(40_000, seed=5, per_s=400))
client = flight.FlightClient(address)
ticket = flight.Ticket(json.dumps({"pipeline": "t", "stream": "latest"}).encode())

# Before any event: an empty batch with the rows' schema.
empty = client.do_get(ticket).read_all()
assert empty.num_rows == 0 and empty.schema.names == [
    "window_start", "window_end", "rank", "hashtag", "value", "error_bound"], empty.schema

# The pipeline takes hashtag as utf8 (pandas may make it large_string).
schema = pa.schema([("tweet_id", pa.int64()), ("ts", pa.int64()), ("hashtag", pa.string()),
                    ("user_id", pa.int64()), ("likes", pa.int64())])
table = pa.Table.from_pandas(events, preserve_index=False).cast(schema)
for batch in table.to_batches(max_chunksize=4_000):
    writer, reader = client.do_put(flight.FlightDescriptor.for_path("t"), table.schema)
    writer.write_batch(batch)
    writer.done_writing()
    reader.read()
    writer.close()

on_time, watermark = accepted(events, EVERY, LATENESS)
assert len(on_time) == len(events), "no event is late"
last = (watermark // EVERY) * EVERY
want = window(on_time, last, LENGTH, "count", None, 5)

deadline = time.monotonic() + 60
while True:
    got = client.do_get(ticket).read_all().to_pandas()
    if len(got) and got["window_end"].iloc[0] == last:
        break
    assert time.monotonic() < deadline, f"the latest window never reached {last}: {got}"
    time.sleep(0.05)
assert (got["window_start"] == last - LENGTH).all()
assert got["rank"].tolist() == want["rank"].tolist()
assert got["hashtag"].tolist() == want["hashtag"].tolist(), (got, want)
assert got["value"].tolist() == want["value"].tolist(), (got, want)

info = client.get_flight_info(flight.FlightDescriptor.for_path("t"))
tickets = [json.loads(e.ticket.ticket) for e in info.endpoints]
assert {"pipeline": "t", "stream": "latest"} in tickets, tickets
print(f"latest window agrees: ending {last}, {got['hashtag'].tolist()}")
