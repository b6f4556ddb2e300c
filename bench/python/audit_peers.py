"""The peers of roo's audit log reads: what a team does with the same
records (the audit directory roo wrote, Arrow IPC files partitioned by
event hour) and the same XGBoost model file, one thread:

- lookup: pyarrow.dataset over the records with a filter on audit_id (a
  scan: no index);
- replay: the model's feature columns read with pyarrow.dataset, then
  XGBoost inplace_predict (nthread 1).

    audit_peers.py RECORDS_DIR MODEL.json ID

Prints one JSON object: lookup {wall_s, cpu_s, rows}, replay {wall_s,
cpu_s, records}, CPU from getrusage after the imports.
"""
import json
import resource
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import xgboost as xgb

pa.set_cpu_count(1)
pa.set_io_thread_count(1)
records, model_path, wanted = sys.argv[1], sys.argv[2], sys.argv[3]


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(f):
    c0, t0 = cpu(), time.perf_counter()
    out = f()
    return out, time.perf_counter() - t0, cpu() - c0


dataset = ds.dataset(records, format="ipc", partitioning="hive")
found, wall, used = timed(
    lambda: dataset.to_table(filter=ds.field("audit_id") == wanted, use_threads=False)
)
lookup = {"wall_s": wall, "cpu_s": used, "rows": found.num_rows}

booster = xgb.Booster(model_file=model_path)
booster.set_param({"nthread": 1})
features = booster.feature_names


def rescore():
    table = dataset.to_table(columns=features, use_threads=False)
    x = np.column_stack([table.column(f).to_numpy(zero_copy_only=False) for f in features])
    return booster.inplace_predict(x, validate_features=False).shape[0]


n, wall, used = timed(rescore)
print(json.dumps({"lookup": lookup, "replay": {"wall_s": wall, "cpu_s": used, "records": n}}))
