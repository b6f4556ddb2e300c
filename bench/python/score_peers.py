"""The peer of `roo score` on an Arrow IPC file: the same rows and XGBoost
model file, scored by XGBoost's own predict on one thread.

    score_peers.py ROWS.arrow MODEL.json REPEATS

Prints one JSON object: predict {wall_s, cpu_s, rows} — inplace_predict
alone on a ready numpy matrix (the best of REPEATS), so nothing of reading
or writing is counted on the peer's side; whole {wall_s, cpu_s} — the file
read with pyarrow, the matrix built, predicted, the scores written as
Arrow IPC (one run). CPU from getrusage.
"""
import json
import resource
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import xgboost as xgb

pa.set_cpu_count(1)
pa.set_io_thread_count(1)
path, model_path, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(f):
    c0, t0 = cpu(), time.perf_counter()
    out = f()
    return out, time.perf_counter() - t0, cpu() - c0


booster = xgb.Booster(model_file=model_path)
booster.set_param({"nthread": 1})
features = booster.feature_names


def whole():
    with pa.memory_map(path) as source:
        table = ipc.open_file(source).read_all()
    x = np.column_stack([table.column(f).to_numpy(zero_copy_only=False) for f in features])
    scores = booster.inplace_predict(x, validate_features=False)
    out = pa.table({"score": pa.array(scores.astype(np.float32))})
    with ipc.new_file(path + ".peer-scores.arrow", out.schema) as w:
        w.write_table(out)
    return x


x, whole_wall, whole_cpu = timed(whole)
x = np.ascontiguousarray(x, dtype=np.float32)
best = None
for _ in range(repeats):
    n, wall, used = timed(lambda: booster.inplace_predict(x, validate_features=False).shape[0])
    if best is None or wall < best[0]:
        best = (wall, used, n)
print(
    json.dumps(
        {
            "predict": {"wall_s": best[0], "cpu_s": best[1], "rows": best[2]},
            "whole": {"wall_s": whole_wall, "cpu_s": whole_cpu},
        }
    )
)
