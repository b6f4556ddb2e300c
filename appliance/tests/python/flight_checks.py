"""Checks a running `roo serve` through the real pyarrow.flight client.

Run by appliance/tests/flight.rs, which starts the daemon with a config
holding: pipeline "score" (source kind = "flight", the fraud model, Arrow
file sink (CSV) rotating every second), pipeline "bad" (a CSV file with one bad
row, dead letters kept), a token named "tester", and a model store.

    flight_checks.py plain ADDRESS SECRET ROO_BINARY MODEL CSV WORKDIR DAEMON_PID
    flight_checks.py tls ADDRESS SECRET CERT_PEM

Every check asserts; the script prints one line per check passed and exits
non-zero on the first failure.
"""

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.flight as flight
import pyarrow.ipc as ipc


def ok(what):
    print(f"ok: {what}", flush=True)


def expect_error(fn, *needles, kind=Exception):
    try:
        fn()
    except kind as e:  # noqa: PERF203
        text = str(e)
        for n in needles:
            assert n in text, f"expected {n!r} in the error, got: {text}"
        return text
    raise AssertionError(f"expected an error with {needles}")


def connect(address, secret, **kwargs):
    client = flight.FlightClient(address, **kwargs)
    header = client.authenticate_basic_token("tester", secret)
    return client, flight.FlightCallOptions(headers=[header])


def exchange(client, options, path, table, chunk):
    """Streams `table` in batches of `chunk` rows, reading each reply as it
    comes (write one, read one): order and flow control both show."""
    writer, reader = client.do_exchange(flight.FlightDescriptor.for_path(*path), options)
    out = []
    with writer:
        writer.begin(table.schema)
        for b in table.to_batches(max_chunksize=chunk):
            writer.write_batch(b)
            got = 0
            while got < b.num_rows:  # one reply per batch; a huge one may come cut
                out.append(reader.read_chunk().data)
                got += out[-1].num_rows
        writer.done_writing()
        rest = reader.read_all()
    out.extend(rest.to_batches())
    return pa.Table.from_batches(out) if out else rest


def features_table(csv_path, features):
    types = {f: pa.float32() for f in features}
    return pacsv.read_csv(csv_path, convert_options=pacsv.ConvertOptions(column_types=types))


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def flow_control(client, options, table, pid):
    """A client that writes and does not read: the server stops reading
    (its reply queue is full, then HTTP/2 windows close), so the writer
    stalls and the daemon's memory stays put. Then every reply arrives."""
    big = pa.concat_tables([table] * 4).combine_chunks()  # 8000 rows a batch
    batches, total = 100, 100 * big.num_rows
    writer, reader = client.do_exchange(flight.FlightDescriptor.for_path("score"), options)
    writer.begin(big.schema)
    written = [0]

    def write():
        for _ in range(batches):
            writer.write_batch(big.to_batches()[0])
            written[0] += 1
        writer.done_writing()

    before = rss_mib(pid)
    t = threading.Thread(target=write)
    t.start()
    time.sleep(3)
    stalled_at, during = written[0], rss_mib(pid)
    assert stalled_at < batches, "the writer was never slowed"
    rows = 0
    while True:
        try:
            rows += reader.read_chunk().data.num_rows
        except StopIteration:
            break
    t.join()
    writer.close()
    assert rows == total, (rows, total)
    assert during - before < 256, f"the daemon grew {during - before:.0f} MiB while the client did not read"
    ok(f"flow control: an unread exchange stalled the writer at {stalled_at}/{batches} batches "
       f"({stalled_at * big.nbytes / 2**20:.0f} of {batches * big.nbytes / 2**20:.0f} MiB), "
       f"daemon RSS {before:.0f} → {during:.0f} MiB; then all {rows} rows came back")


def plain(address, secret, roo, model, csv_path, work, pid):
    # Without credentials, or with wrong ones: UNAUTHENTICATED.
    bare = flight.FlightClient(address)
    expect_error(lambda: list(bare.list_flights()), "no credentials", kind=flight.FlightUnauthenticatedError)
    expect_error(
        lambda: bare.authenticate_basic_token("tester", "not-the-secret-at-all"),
        "handshake refused",
        kind=flight.FlightUnauthenticatedError,
    )
    wrong = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer not-the-secret-at-all")])
    expect_error(lambda: list(bare.list_flights(options=wrong)), "not one this server knows",
                 kind=flight.FlightUnauthenticatedError)
    ok("calls without valid credentials are refused")

    client, options = connect(address, secret)
    flights = {tuple(f.descriptor.path): f for f in client.list_flights(options=options)}
    assert (b"score",) in flights and (b"bad",) in flights, flights.keys()
    info = flights[(b"score",)]
    features = json.loads(open(model).read())["learner"]["feature_names"]
    assert info.schema.names == features + ["score", "model_version"], info.schema.names
    meta = json.loads(info.app_metadata)
    assert meta["source"] == "flight" and meta["model_version"].startswith("sha256:"), meta
    input_schema = client.get_schema(flight.FlightDescriptor.for_path("score", "input"), options).schema
    assert input_schema.names == features and all(t == pa.float32() for t in input_schema.types)
    ok(f"ListFlights/GetSchema: {len(flights)} pipelines, output {len(info.schema)} columns")

    # DoExchange scores exactly what `roo score` writes for the same data.
    table = features_table(csv_path, features)
    input_arrow = f"{work}/input.arrow"
    with ipc.new_file(input_arrow, table.schema) as w:
        w.write_table(table)
    scored_arrow = f"{work}/scored.arrow"
    subprocess.run([roo, "score", "--model", model, "--input", input_arrow, "--output", scored_arrow],
                   check=True, capture_output=True)
    expected = ipc.open_file(scored_arrow).read_all()
    version = meta["model_version"]
    for chunk in (1, 7, 1000, table.num_rows):
        got = exchange(client, options, ["score"], table, chunk)
        assert got.num_rows == table.num_rows, (chunk, got.num_rows)
        assert got.column("txn_id").to_pylist() == table.column("txn_id").to_pylist(), "in order"
        assert got.column("score").equals(expected.column("score")), f"chunk {chunk}: scores differ"
        assert set(got.column("model_version").to_pylist()) == {version}
    ok(f"DoExchange = roo score on {table.num_rows} rows at batch sizes 1, 7, 1000, {table.num_rows}")

    # Concurrent clients, each with its own slice, each gets its own rows back.
    results, errors = {}, []

    def worker(i):
        try:
            c, o = connect(address, secret)
            part = table.slice(i * 300, 300)
            results[i] = (part, exchange(c, o, ["score"], part, 50))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i, (part, got) in results.items():
        assert got.column("txn_id").equals(part.column("txn_id")), i
        assert got.column("score").equals(expected.column("score").slice(i * 300, 300)), i
    ok("6 concurrent DoExchange clients each get their own rows, scored")
    flow_control(client, options, table, int(pid))

    # A schema without the model's features, a wrong DoPut schema: refused
    # with the reason, and the server carries on.
    missing = table.drop_columns(["amount"])
    text = expect_error(lambda: exchange(client, options, ["score"], missing, 100), "amount")
    assert "does not fit" in text or "missing" in text.lower(), text
    expect_error(lambda: exchange(client, options, ["nope"], table, 100), "names no pipeline")
    wrong_put = pa.table({"amount": pa.array([1.0], pa.float64())})
    def bad_put():
        w, _ = client.do_put(flight.FlightDescriptor.for_path("score"), wrong_put.schema, options)
        w.write_table(wrong_put)
        w.close()
    expect_error(bad_put, "the pipeline takes")
    def put_into_file_pipeline():
        w, _ = client.do_put(flight.FlightDescriptor.for_path("bad"), wrong_put.schema, options)
        w.close()
    expect_error(put_into_file_pipeline, "kind = \"flight\"")
    again = exchange(client, options, ["score"], table.slice(0, 10), 10)
    assert again.column("score").equals(expected.column("score").slice(0, 10))
    ok("bad schemas are refused with the reason; the server carries on")

    # DoPut the features into the pipeline; DoGet reads its sink's output.
    put_table = table.select(features)
    writer, acks = client.do_put(flight.FlightDescriptor.for_path("score"), put_table.schema, options)
    accepted = 0
    for b in put_table.to_batches(max_chunksize=500):
        writer.write_batch(b)
        accepted = json.loads(acks.read().to_pybytes())["rows_accepted"]
    writer.done_writing()
    writer.close()
    assert accepted == put_table.num_rows, accepted
    deadline = time.time() + 30
    while True:
        out = client.do_get(flight.Ticket(json.dumps({"pipeline": "score", "stream": "output"}).encode()),
                            options).read_all()
        if out.num_rows >= put_table.num_rows or time.time() > deadline:
            break
        time.sleep(0.3)
    assert out.num_rows == put_table.num_rows, out.num_rows
    assert out.column("score").equals(expected.column("score")), "DoPut → sink scores differ"
    ok(f"DoPut {put_table.num_rows} rows (PutResult rows_accepted = {accepted}), DoGet reads them scored")

    # Dead letters of the file pipeline, through DoGet.
    dead = client.do_get(flight.Ticket(b"bad/dead_letters"), options).read_all()
    assert dead.num_rows == 1, dead
    assert "not a number" in dead.column("reason")[0].as_py(), dead.column("reason")
    ok(f"DoGet dead letters: {dead.column('reason')[0].as_py()!r}")

    # Actions: upload a model, exchange with it by version, activate it.
    actions = {a.type for a in client.list_actions(options=options)}
    assert {"list-models", "upload-model", "activate-model", "pipeline-stats", "reload"} <= actions

    def action(kind, body=b""):
        return json.loads(next(iter(client.do_action(flight.Action(kind, body), options))).body.to_pybytes())

    linear = {"kind": "logistic", "features": ["amount", "hour_of_day"], "weights": [0.01, -0.05], "bias": -1.5}
    uploaded = action("upload-model", json.dumps(linear).encode())
    new_version = uploaded["version"]
    assert uploaded["family"] == "linear", uploaded
    expect_error(lambda: action("upload-model", b"{\"learner\": 7}"), "upload-model")
    by_model = exchange(client, options, ["models", new_version], table.slice(0, 100), 100)
    z = (0.01 * table.column("amount").to_numpy()[:100].astype(np.float64)
         - 0.05 * table.column("hour_of_day").to_numpy()[:100].astype(np.float64) - 1.5)
    np.testing.assert_allclose(by_model.column("score").to_numpy(), 1 / (1 + np.exp(-z)), rtol=1e-5)
    # Activate it while an exchange is open: the swap lands between two
    # batches of the stream, and each row names the model that scored it.
    writer, reader = client.do_exchange(flight.FlightDescriptor.for_path("score"), options)
    writer.begin(table.schema)
    writer.write_batch(table.slice(0, 5).to_batches()[0])
    before_swap = reader.read_chunk().data
    activated = action("activate-model", json.dumps({"pipeline": "score", "model": new_version}).encode())
    assert activated["version"] == new_version and activated["previous"] == version, activated
    writer.write_batch(table.slice(5, 5).to_batches()[0])
    after_swap = reader.read_chunk().data
    writer.done_writing()
    writer.close()
    assert set(before_swap.column("model_version").to_pylist()) == {version}
    assert set(after_swap.column("model_version").to_pylist()) == {new_version}
    np.testing.assert_allclose(after_swap.column("score").to_numpy(), 1 / (1 + np.exp(-z[5:10])), rtol=1e-5)
    models = action("list-models")
    assert [m for m in models["pipelines"] if m["pipeline"] == "score"][0]["version"] == new_version
    assert any(m["version"] == new_version and m["active"] for m in models["stored"])
    reloaded = action("reload", b"score")
    assert reloaded == [{"pipeline": "score", "version": new_version}], reloaded
    stats = action("pipeline-stats", b"score")
    assert stats[0]["events_in"] == put_table.num_rows and stats[0]["model_version"] == new_version, stats
    expect_error(lambda: action("no-such-action"), "unknown action")
    ok(f"actions: uploaded {new_version[:19]}…, activated it mid-exchange (rows name their model), list-models, reload, pipeline-stats")


def tls(address, secret, cert):
    with open(cert, "rb") as f:
        root = f.read()
    client, options = connect(address, secret, tls_root_certs=root)
    names = [f.descriptor.path for f in client.list_flights(options=options)]
    assert names, names
    plain_client = flight.FlightClient(address.replace("grpc+tls", "grpc"))
    expect_error(lambda: plain_client.authenticate_basic_token("tester", secret))
    ok(f"TLS: authenticated and listed {len(names)} flights; plaintext refused")


if __name__ == "__main__":
    mode, rest = sys.argv[1], sys.argv[2:]
    {"plain": plain, "tls": tls}[mode](*rest)
