"""Flight DoExchange from pyarrow, and the per-request baseline a team
would build: a small Python HTTP server calling XGBoost per request.

    flight_peers.py ROWS.arrow MODEL.json FLIGHT_ADDRESS SECONDS ROO_PID SIZE...

For each batch size: the pyarrow client against roo (write a batch, read
its reply), then the HTTP baseline (JSON rows in, JSON scores out, one
keep-alive connection, requests one after another). Prints one JSON line
per measurement: rows/s, round-trip p50/p99/p999 in µs, the server's own
CPU time per row (roo's process is ROO_PID), and for the HTTP server its
peak RSS.
"""

import http.client
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.ipc as ipc

SERVER = r'''
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
import numpy as np, xgboost as xgb
booster = xgb.Booster(model_file=sys.argv[1])
booster.set_param({"nthread": 1})
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # no 40 ms wait on small replies
    def log_message(self, *a): pass
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        rows = np.asarray(json.loads(body)["rows"], dtype=np.float32)
        scores = booster.inplace_predict(rows).tolist()
        out = json.dumps({"scores": scores}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
s = HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
'''


def cpu_s(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def quantiles(lat_us):
    return [float(q) for q in np.percentile(np.asarray(lat_us), [50, 99, 99.9])]


def peak_rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def timed(seconds, fn, min_reps=3):
    lat, started = [], time.perf_counter()
    while time.perf_counter() - started < seconds or len(lat) < min_reps:
        t = time.perf_counter()
        fn()
        lat.append((time.perf_counter() - t) * 1e6)
    return lat, time.perf_counter() - started


def pyarrow_client(table, address, seconds, size, roo_pid):
    client = flight.FlightClient(address)
    batch = table.slice(0, size).combine_chunks().to_batches()[0]
    writer, reader = client.do_exchange(flight.FlightDescriptor.for_path("score"))
    writer.begin(batch.schema)

    def one():
        writer.write_batch(batch)
        got = 0
        while got < size:
            got += reader.read_chunk().data.num_rows

    for _ in range(3):
        one()
    cpu0 = cpu_s(roo_pid)
    lat, elapsed = timed(seconds, one)
    cpu = cpu_s(roo_pid) - cpu0
    writer.done_writing()
    reader.read_all()
    writer.close()
    p50, p99, p999 = quantiles(lat)
    n = len(lat) * size
    return {"peer": "pyarrow → roo", "size": size, "rows_per_s": n / elapsed, "rows": n, "seconds": elapsed,
            "p50_us": p50, "p99_us": p99, "p999_us": p999, "server_cpu_ns_per_row": cpu * 1e9 / n}


def http_baseline(table, model, seconds, size):
    server = subprocess.Popen([sys.executable, "-c", SERVER, model], stdout=subprocess.PIPE,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        port = int(server.stdout.readline())
        features = [c for c in table.column_names if c != "txn_id"]
        rows = np.column_stack([table.column(f).to_numpy(zero_copy_only=False)[:size] for f in features])
        body = json.dumps({"rows": np.nan_to_num(rows, nan=0.0).tolist()}).encode()
        conn = http.client.HTTPConnection("127.0.0.1", port)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def one():
            conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
            out = json.loads(conn.getresponse().read())
            assert len(out["scores"]) == size

        for _ in range(2):
            one()
        cpu0 = cpu_s(server.pid)
        lat, elapsed = timed(seconds, one)
        cpu = cpu_s(server.pid) - cpu0
        p50, p99, p999 = quantiles(lat)
        n = len(lat) * size
        return {"peer": "HTTP + XGBoost (Python)", "size": size, "rows_per_s": n / elapsed, "rows": n,
                "seconds": elapsed, "p50_us": p50, "p99_us": p99, "p999_us": p999,
                "server_cpu_ns_per_row": cpu * 1e9 / n, "server_peak_rss_mib": peak_rss_mib(server.pid)}
    finally:
        server.kill()


def main():
    rows_path, model, address, seconds, roo_pid = sys.argv[1:6]
    sizes = [int(s) for s in sys.argv[6:]]
    table = ipc.open_file(rows_path).read_all()
    for size in sizes:
        print(json.dumps(pyarrow_client(table, address, float(seconds), size, int(roo_pid))), flush=True)
    for size in sizes:
        print(json.dumps(http_baseline(table, model, float(seconds), size)), flush=True)


if __name__ == "__main__":
    main()
