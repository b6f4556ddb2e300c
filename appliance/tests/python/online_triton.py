"""The real tritonclient (HTTP and gRPC) against a real `roo serve` with
`[online]`: driven by appliance/tests/online.rs.

  online_triton.py check HTTP GRPC FLIGHT SCORES CSV   single events and
      batches score exactly as `roo score` scored the same rows (SCORES, an
      Arrow IPC file), over V2 REST, V2 gRPC and a Flight DoExchange of
      ["online", PIPELINE]; metadata; V2 errors; 64 concurrent clients whose
      replies never cross.
  online_triton.py flood HTTP SCORES CSV SECONDS   64 clients as fast as they
      can for SECONDS: prints {"ok": n, "busy": m}; every reply correct.
  online_triton.py ask HTTP CARD TS   one event for the `counts` pipeline:
      prints the card's count before it.
"""

import json
import sys
import threading
import time

import numpy as np
import pyarrow
import pyarrow.csv
import pyarrow.flight
import pyarrow.ipc
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

MODEL = "cards"


def load(scores_path, csv_path):
    with open(scores_path, "rb") as f:
        scores = pyarrow.ipc.open_file(f).read_all().column("score").to_numpy()
    table = pyarrow.csv.read_csv(csv_path)
    return scores.astype(np.float32), table


def features(http):
    meta = http.get_model_metadata(MODEL)
    return [i["name"] for i in meta["inputs"]]


def matrix(table, names, rows):
    return np.stack(
        [table.column(n).to_numpy()[rows].astype(np.float32) for n in names], axis=1
    )


def columns_inputs(module, table, names, row, binary=True):
    inputs = []
    for n in names:
        i = module.InferInput(n, [1], "FP32")
        v = table.column(n)[row].as_py()
        value = np.array([np.nan if v is None else v], dtype=np.float32)
        if module is httpclient:
            i.set_data_from_numpy(value, binary_data=binary)
        else:
            i.set_data_from_numpy(value)
        inputs.append(i)
    return inputs


def matrix_input(module, m):
    i = module.InferInput("input__0", list(m.shape), "FP32")
    i.set_data_from_numpy(m)
    return i


def expect_error(what, status, call):
    try:
        call()
    except InferenceServerException as e:
        assert status in str(e.status()), f"{what}: status {e.status()}, expected {status}: {e}"
        return str(e)
    raise AssertionError(f"{what}: no error")


def check(http_addr, grpc_addr, flight_addr, scores_path, csv_path):
    expected, table = load(scores_path, csv_path)
    http = httpclient.InferenceServerClient(url=http_addr)
    grpc = grpcclient.InferenceServerClient(url=grpc_addr)
    assert http.is_server_live() and http.is_server_ready()
    assert grpc.is_server_live() and grpc.is_server_ready()
    assert http.is_model_ready(MODEL) and grpc.is_model_ready(MODEL)

    # Metadata: the model's features as FP32 inputs, the version scoring.
    meta = http.get_model_metadata(MODEL)
    names = [i["name"] for i in meta["inputs"]]
    assert len(names) == 30 and names[0] == "amount", names
    assert all(i["datatype"] == "FP32" for i in meta["inputs"]), meta
    assert meta["versions"][0].startswith("sha256:"), meta
    assert "score" in [o["name"] for o in meta["outputs"]], meta
    gmeta = grpc.get_model_metadata(MODEL)
    assert [i.name for i in gmeta.inputs] == names
    assert list(gmeta.versions) == meta["versions"]

    # Single events, one tensor per column: REST (binary and JSON) and gRPC.
    scored = 0
    for row in range(0, 120):
        for module, client, binary in (
            (httpclient, http, True),
            (httpclient, http, False),
            (grpcclient, grpc, True),
        ):
            outputs = None
            if module is httpclient and not binary:
                outputs = [httpclient.InferRequestedOutput("score", binary_data=False)]
                if any(table.column(n)[row].as_py() is None for n in names):
                    # A missing value is NaN, which JSON cannot carry.
                    said = expect_error(
                        "NaN in JSON",
                        "400",
                        lambda: client.infer(
                            MODEL, columns_inputs(module, table, names, row, binary), outputs=outputs
                        ),
                    )
                    assert "JSON has no NaN" in said, said
                    continue
            r = client.infer(
                MODEL, columns_inputs(module, table, names, row, binary), outputs=outputs
            )
            got = r.as_numpy("score")
            scored += 1
            assert got.shape == (1,), got.shape
            assert got[0] == expected[row], (row, module.__name__, binary, got[0], expected[row])
            version = r.get_response()["model_version"] if module is httpclient else r.get_response().model_version
            assert version == meta["versions"][0]

    # Batches: one [N, 30] tensor in the model's feature order.
    rows = np.arange(0, len(expected))
    m = matrix(table, names, rows)
    for module, client in ((httpclient, http), (grpcclient, grpc)):
        for start in range(0, len(rows), 500):
            part = m[start : start + 500]
            got = client.infer(MODEL, [matrix_input(module, part)]).as_numpy("score")
            scored += len(part)
            assert np.array_equal(got, expected[start : start + 500], equal_nan=True), module.__name__

    # Flight: one-row batches through the pipeline's chain, lock-step.
    flight = pyarrow.flight.connect(f"grpc://{flight_addr}")
    writer, reader = flight.do_exchange(pyarrow.flight.FlightDescriptor.for_path("online", MODEL))
    schema = pyarrow.schema([(n, pyarrow.float32()) for n in names])
    writer.begin(schema)
    for row in range(200):
        batch = pyarrow.record_batch([pyarrow.array([m[row, j]], pyarrow.float32()) for j in range(len(names))], schema=schema)
        writer.write_batch(batch)
        reply = reader.read_chunk().data
        assert reply.num_rows == 1
        got = reply.column(reply.schema.get_field_index("score")).to_numpy()[0]
        assert got == expected[row] or (np.isnan(got) and np.isnan(expected[row])), (row, got, expected[row])
        scored += 1
    writer.done_writing()
    writer.close()
    # A batch whose columns are not the pipeline's is refused by name.
    writer, reader = flight.do_exchange(pyarrow.flight.FlightDescriptor.for_path("online", MODEL))
    bad = pyarrow.schema([("amount", pyarrow.float32())])
    writer.begin(bad)
    try:
        writer.write_batch(pyarrow.record_batch([pyarrow.array([1.0], pyarrow.float32())], schema=bad))
        reader.read_chunk()
        raise AssertionError("a batch without the pipeline's columns was taken")
    except pyarrow.ArrowException as e:
        assert "the pipeline takes" in str(e), e
    finally:
        try:
            writer.close()
        except pyarrow.ArrowException:
            pass

    # V2 errors with the right status, over both transports.
    one = matrix(table, names, np.array([0]))
    for module, client, bad, not_found in (
        (httpclient, http, "400", "404"),
        (grpcclient, grpc, "INVALID_ARGUMENT", "NOT_FOUND"),
    ):
        wrong = columns_inputs(module, table, names, 0)
        wrong[0] = module.InferInput(names[0], [1], "BYTES")
        wrong[0].set_data_from_numpy(np.array([b"4.1"], dtype=np.object_))
        said = expect_error("wrong datatype", bad, lambda: client.infer(MODEL, wrong))
        assert "is BYTES" in said, said
        said = expect_error(
            "missing input", bad, lambda: client.infer(MODEL, columns_inputs(module, table, names, 0)[1:])
        )
        assert "missing input amount" in said, said
        said = expect_error(
            "shape", bad, lambda: client.infer(MODEL, [matrix_input(module, one[:, :29])])
        )
        assert "F must be 30" in said, said
        mixed = columns_inputs(module, table, names, 0)
        mixed[3] = module.InferInput(names[3], [2], "FP32")
        mixed[3].set_data_from_numpy(np.array([1.0, 2.0], dtype=np.float32))
        said = expect_error("rows", bad, lambda: client.infer(MODEL, mixed))
        assert "has 2 rows" in said, said
        said = expect_error(
            "unknown model", not_found, lambda: client.infer("nope", [matrix_input(module, one)])
        )
        assert "the models are the pipelines" in said, said

    # 64 concurrent clients, each its own rows: replies never cross.
    failures = []

    def client_thread(t):
        try:
            if t % 2 == 0:
                module, client = httpclient, httpclient.InferenceServerClient(url=http_addr)
            else:
                module, client = grpcclient, grpc
            for k in range(40):
                row = (t * 40 + k) % len(expected)
                got = client.infer(MODEL, [matrix_input(module, m[row : row + 1])]).as_numpy("score")
                if got[0] != expected[row]:
                    failures.append((t, row, float(got[0]), float(expected[row])))
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append((t, repr(e)))

    threads = [threading.Thread(target=client_thread, args=(t,)) for t in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:5]
    scored += 64 * 40
    print(f"online checks passed: {scored} rows scored")


def flood(http_addr, scores_path, csv_path, seconds):
    expected, table = load(scores_path, csv_path)
    http = httpclient.InferenceServerClient(url=http_addr)
    names = features(http)
    m = matrix(table, names, np.arange(len(expected)))
    counts = {"ok": 0, "busy": 0}
    failures = []
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def client_thread(t):
        client = httpclient.InferenceServerClient(url=http_addr)
        k = 0
        while time.monotonic() < end:
            row = (t * 1000 + k) % len(expected)
            k += 1
            try:
                got = client.infer(MODEL, [matrix_input(httpclient, m[row : row + 1])]).as_numpy("score")
                with lock:
                    counts["ok"] += 1
                if got[0] != expected[row]:
                    failures.append((row, float(got[0])))
            except InferenceServerException as e:
                if str(e.status()) == "503" and "requests are in flight" in str(e):
                    with lock:
                        counts["busy"] += 1
                else:
                    failures.append(repr(e))

    threads = [threading.Thread(target=client_thread, args=(t,)) for t in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:5]
    print(json.dumps(counts))


def ask(http_addr, card, ts):
    """One event for the `counts` pipeline; prints its card_count_1h."""
    http = httpclient.InferenceServerClient(url=http_addr)
    inputs = []
    for name, value, datatype, dtype in (
        ("card_id", card, "INT64", np.int64),
        ("ts", ts, "INT64", np.int64),
        ("amount", 5.0, "FP32", np.float32),
    ):
        i = httpclient.InferInput(name, [1], datatype)
        i.set_data_from_numpy(np.array([value], dtype=dtype))
        inputs.append(i)
    r = http.infer("counts", inputs, outputs=[httpclient.InferRequestedOutput("card_count_1h")])
    print(int(r.as_numpy("card_count_1h")[0]))


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "check":
        check(*sys.argv[2:7])
    elif mode == "flood":
        flood(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]))
    elif mode == "ask":
        ask(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        raise SystemExit(f"unknown mode {mode}")
