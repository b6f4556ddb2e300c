"""Drives a running `roo serve` whose pipeline "e" (source kind = "flight",
an Arrow file sink rotating every second) joins table "profile"
(profiles.csv, versioned by valid_from), through the real pyarrow.flight
client: the file changes (the watcher reloads it), breaks (the old
snapshot stays), is reloaded by the `reload-table` action, takes upserts
over DoPut ["tables", "profile"], and is reloaded by SIGHUP (upserts not
in the file are dropped). Every output row must name the snapshot it
joined (the SHA-256 of the file, or the upsert's version) and carry that
snapshot's values as of its event time.

    enrich_live.py ADDRESS DAEMON_PID TABLE_CSV
"""
import hashlib
import json
import os
import signal
import sys
import time

import pandas as pd
import pyarrow as pa
import pyarrow.flight as flight

address, pid, table_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
client = flight.FlightClient(address)
US = 1_000_000
START = 1_790_000_000 * US
LATE = START + 40 * 86_400 * US  # after every version


def ok(what):
    print(f"ok: {what}", flush=True)


def wait(condition, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def table_stats():
    body = list(client.do_action(flight.Action("pipeline-stats", b"e")))[0].body.to_pybytes()
    return next(o for o in json.loads(body)[0]["operators"] if o["kind"] == "enrich")


def version_of_file():
    with open(table_path, "rb") as f:
        return "sha256:" + hashlib.sha256(f.read()).hexdigest()


def write_table(df):
    tmp = table_path + ".tmp"
    df.to_csv(tmp, index=False)
    os.replace(tmp, table_path)


def put(first_txn, cards):
    n = len(cards)
    batch = pa.table({
        "txn_id": pa.array(range(first_txn, first_txn + n), pa.int64()),
        "card_id": pa.array(cards, pa.int64()),
        "ts": pa.array([LATE] * n, pa.int64()),
        "amount": pa.array([1.5] * n, pa.float64()),
    })
    writer, _ = client.do_put(flight.FlightDescriptor.for_path("e"), batch.schema)
    writer.write_table(batch)
    writer.close()
    return list(range(first_txn, first_txn + n))


def rows(txns):
    """The output rows of these transactions, once the sink published them."""
    got = {}

    def have():
        ticket = flight.Ticket(json.dumps({"pipeline": "e", "stream": "output"}).encode())
        out = client.do_get(ticket).read_all().to_pandas()
        got["df"] = out[out.txn_id.isin(txns)].sort_values("txn_id")
        return len(got["df"]) == len(txns)

    wait(have, f"transactions {txns[0]}..{txns[-1]} in the output")
    return got["df"]


def expect(df, profile, version, what):
    """Every row names `version` and carries `profile`'s values as of LATE."""
    assert (df.profile_version.astype(str) == version).all(), (what, df.profile_version.unique(), version)
    newest = profile[profile.valid_from <= LATE].sort_values("valid_from").groupby("card_id").last()
    for _, r in df.iterrows():
        if r.card_id in newest.index:
            assert r.credit_limit == newest.loc[r.card_id, "credit_limit"], (what, r.card_id)
        else:
            assert pd.isna(r.credit_limit), (what, r.card_id)
    ok(what)


cards = list(range(0, 1100, 11))
profile = pd.read_csv(table_path)
v1 = version_of_file()
expect(rows(put(0, cards)), profile, v1, "the first snapshot, named by its file's hash")

# The file changes: the watcher loads it between two batches.
profile2 = profile.assign(credit_limit=profile.credit_limit + 1)
loads = table_stats()["table_loads"]
write_table(profile2)
v2 = version_of_file()
wait(lambda: table_stats()["table_loads"] > loads, "the changed file to load")
expect(rows(put(1000, cards)), profile2, v2, "a changed file reloaded by the watcher")

# A broken file (a duplicate row) is refused; the snapshot in use stays.
failures = table_stats()["table_load_failures"]
write_table(pd.concat([profile2, profile2[profile2.card_id == 5]]))
wait(lambda: table_stats()["table_load_failures"] > failures, "the broken file to be refused")
expect(rows(put(2000, cards)), profile2, v2, "a broken file refused, the old snapshot kept")

# reload-table reads the file at once.
profile3 = profile.assign(credit_limit=profile.credit_limit + 2)
write_table(profile3)
v3 = version_of_file()
body = list(client.do_action(flight.Action("reload-table", json.dumps({"table": "profile"}).encode())))[0].body
reply = json.loads(body.to_pybytes())
assert reply == [{"pipeline": "e", "table": "profile", "version": v3}], reply
expect(rows(put(3000, cards)), profile3, v3, "reload-table")
try:
    list(client.do_action(flight.Action("reload-table", b'{"table": "nope"}')))
    raise AssertionError("an unknown table was reloaded")
except pa.ArrowKeyError as e:  # NOT_FOUND
    assert 'no table named "nope"; tables: profile (pipeline e)' in str(e), str(e)
ok("reload-table of an unknown table is refused naming the tables")

# Upserts: a new card, and a new version of card 11 (valid from before LATE).
upsert = pa.table({
    "card_id": pa.array([5000, 11], pa.int64()),
    "valid_from": pa.array([START, LATE - US], pa.int64()),
    "credit_limit": pa.array([77777, 99999], pa.int64()),
    "home_country": pa.array(["FR", "FR"]),
    "prior_chargebacks": pa.array([3, 0], pa.int64()),
})
writer, reader = client.do_put(flight.FlightDescriptor.for_path("tables", "profile"), upsert.schema)
writer.write_table(upsert)
writer.done_writing()
acks = []
while True:
    try:
        buf = reader.read()
    except StopIteration:
        break
    if buf is None:
        break
    acks.append(json.loads(buf.to_pybytes()))
writer.close()
assert acks and acks[-1]["rows_upserted"] == 2, acks
vu = acks[-1]["tables"][0]["version"]
assert vu.startswith("sha256:") and vu != v3, acks
upserted = pd.concat([profile3, upsert.to_pandas()])
expect(rows(put(4000, cards + [5000])), upserted, vu, "upserts seen by the next batch, under their own version")

# A bad upsert is refused with the column named; nothing changes.
bad = pa.table({"card_id": pa.array(["x"]), "valid_from": pa.array([1], pa.int64())})
writer, reader = client.do_put(flight.FlightDescriptor.for_path("tables", "profile"), bad.schema)
try:
    writer.write_table(bad)
    writer.close()
    raise AssertionError("a bad upsert was taken")
except pa.ArrowInvalid as e:  # INVALID_ARGUMENT
    assert 'upsert: column "card_id"' in str(e), str(e)
ok("a bad upsert refused naming the column")

# SIGHUP reloads the file: the upserts, not in it, are gone.
loads = table_stats()["table_loads"]
os.kill(pid, signal.SIGHUP)
wait(lambda: table_stats()["table_loads"] > loads, "SIGHUP to reload the table")
expect(rows(put(5000, cards + [5000])), profile3, v3, "upserts dropped by SIGHUP")
