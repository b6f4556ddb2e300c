#!/usr/bin/env python3
"""The Kafka consumer a team writes in Python instead of roo, for `roo-bench kafka`.

    kafka_peers.py --brokers B --topic IN --out OUT --format csv|arrow --events N --model M

A confluent-kafka consumer (librdkafka underneath, as roo's) in its own
group, from the earliest offset, committing by hand: consume() up to 1,024
messages, parse them with pyarrow (csv: read_csv of the joined lines,
columns txn_id and the 30 features; arrow: open_stream per message),
XGBoost inplace_predict on one thread, produce every row with its score
(csv: one NDJSON message per row, from pandas to_json(lines=True); arrow:
one IPC stream per input message), flush, commit the batch's offsets
(at least once, as roo). Stops after N events; prints JSON: events,
wall_s and cpu_s from the first message to the last event produced
(getrusage, after imports and the group join), peak_rss_mib.
"""
import argparse
import io
import json
import resource
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import xgboost as xgb
from confluent_kafka import Consumer, KafkaException, Producer

pa.set_cpu_count(1)
pa.set_io_thread_count(1)

BATCH = 1024


def cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--format", choices=["csv", "arrow"], required=True)
    ap.add_argument("--events", type=int, required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--features", required=True, help="the 30 feature columns, comma-separated")
    args = ap.parse_args()
    features = args.features.split(",")

    booster = xgb.Booster()
    booster.load_model(args.model)
    booster.set_param({"nthread": 1})
    consumer = Consumer(
        {
            "bootstrap.servers": args.brokers,
            "group.id": "py-bench-" + args.format,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": args.brokers,
            "enable.idempotence": True,
            "linger.ms": 5,
            "queue.buffering.max.messages": 1000000,
            "message.max.bytes": 16000000,
        }
    )
    consumer.subscribe([args.topic])
    names = ["txn_id"] + features
    types = {"txn_id": pa.int64(), **{f: pa.float32() for f in features}}
    csv_read = pacsv.ReadOptions(column_names=names, use_threads=False)
    csv_convert = pacsv.ConvertOptions(column_types=types)

    done = 0
    started = None
    while done < args.events:
        messages = consumer.consume(num_messages=BATCH, timeout=1.0)
        if not messages:
            continue
        if started is None:
            started = (time.perf_counter(), cpu_s())
        good = []
        for m in messages:
            if m.error():
                raise KafkaException(m.error())
            good.append(m)
        if args.format == "csv":
            data = b"\n".join(m.value() for m in good)
            table = pacsv.read_csv(io.BytesIO(data), read_options=csv_read, convert_options=csv_convert)
            tables = [table]
        else:
            tables = [ipc.open_stream(m.value()).read_all() for m in good]
        for table in tables:
            x = np.column_stack(
                [table.column(f).to_numpy(zero_copy_only=False).astype(np.float32, copy=False) for f in features]
            )
            scores = booster.inplace_predict(x)
            scored = table.append_column("score", pa.array(scores, pa.float32()))
            if args.format == "csv":
                lines = scored.to_pandas().to_json(orient="records", lines=True).splitlines()
                for line in lines:
                    while True:
                        try:
                            producer.produce(args.out, line.encode())
                            break
                        except BufferError:
                            producer.poll(0.005)
                    producer.poll(0)
            else:
                sink = io.BytesIO()
                with ipc.new_stream(sink, scored.schema) as w:
                    w.write_table(scored)
                producer.produce(args.out, sink.getvalue())
                producer.poll(0)
            done += table.num_rows
        # At least once: the batch's rows acknowledged, then its offsets.
        producer.flush()
        consumer.commit(asynchronous=False)
    wall = time.perf_counter() - started[0]
    cpu = cpu_s() - started[1]
    consumer.close()
    print(
        json.dumps(
            {
                "events": done,
                "wall_s": wall,
                "cpu_s": cpu,
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


if __name__ == "__main__":
    main()
