"""put: DoPut into a live pipeline, resumed across a daemon restart."""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow as pa
import pytest

import roo
from conftest import TOKEN, free_port, transactions_like, write_config


def test_put_resumes_after_the_daemon_restarts_mid_put_without_a_duplicate(tmp_path: Path):
    config = write_config(tmp_path, free_port())
    rows, batch_rows = 60_000, 2_000
    data = transactions_like(rows)
    batches = data.to_batches(max_chunksize=batch_rows)
    first_half = len(batches) // 3
    restarted = threading.Event()
    servers: list[roo.Server] = [roo.serve(config)]
    restarter: list[threading.Thread] = []

    def restart() -> None:
        # A drain (SIGTERM), then the same config again, on the same port.
        servers[0].stop()
        servers.append(roo.serve(config))
        restarted.set()

    first_taken: list[int] = []

    def on_progress(accepted: int) -> None:
        if not restarted.is_set():
            first_taken[:] = [accepted]
        if not restarter:
            restarter.append(threading.Thread(target=restart))
            restarter[0].start()

    def stream():
        # A third of the input, then nothing until the daemon has been
        # stopped and started again: the stop lands mid-put, always.
        for i, batch in enumerate(batches):
            if i == first_half:
                assert restarted.wait(120), "the daemon did not restart"
            yield batch

    reader = pa.RecordBatchReader.from_batches(data.schema, stream())
    try:
        with roo.connect(servers[0].flight, TOKEN) as c:
            accepted = c.put(reader, pipeline="sink", batch_rows=batch_rows, on_progress=on_progress)
        assert accepted == rows
        restarter[0].join()
    finally:
        for s in servers:
            s.stop()
    # What the sinks published, read back through the product's own path
    # (DoGet of the pipeline's output) from a third start of the daemon.
    with roo.serve(config) as reader_server, reader_server.connect(TOKEN) as c:
        out = c.output("sink")
    ids = out.column("txn_id").to_pylist()
    # Every row once: none lost, none twice, in the order sent.
    assert len(ids) == rows, f"{len(ids)} rows published for {rows} sent"
    assert ids == data.column("txn_id").to_pylist()
    # Both daemons took part: the first stopped mid-put, having taken part
    # of it, and the second took the rest.
    assert servers[0].ready["pid"] != servers[1].ready["pid"]
    assert 0 < first_taken[0] < rows, first_taken


def test_a_daemon_killed_mid_put_is_not_resumed(tmp_path: Path):
    """SIGKILL says nothing of what was taken: put raises, with no count
    to resume from, rather than guess and risk a duplicate."""
    config = write_config(tmp_path, free_port())
    data = transactions_like(20_000)
    batches = data.to_batches(max_chunksize=1_000)
    server = roo.serve(config)
    killed = threading.Event()

    def stream():
        for i, batch in enumerate(batches):
            if i == 5:
                server.stop(kill=True)
                killed.set()
            yield batch

    reader = pa.RecordBatchReader.from_batches(data.schema, stream())
    try:
        with roo.connect(server.flight, TOKEN) as c:
            with pytest.raises(roo.UnavailableError) as caught:
                c.put(reader, pipeline="sink", batch_rows=1_000, resume_timeout=5)
    finally:
        server.stop()
    assert killed.is_set()
    assert caught.value.rows_accepted is None
    assert "without saying how many rows it took; 5000 rows of the input were acknowledged" in str(caught.value)


def test_a_named_put_survives_sigkills_and_delivers_every_row_once(tmp_path: Path):
    """A named stream under checkpoints: the daemon is killed with SIGKILL
    four times mid-put (each time the put has made progress since the
    last) and started again; put reconnects, is told the stream's rows
    durable, sends from there, and returns once every row is durable. The
    sink then holds every row once, in order. A second put of the same
    rows under the same name (a client that crashed and starts over)
    sends nothing twice."""
    config = write_config(tmp_path, free_port(), checkpoints=True)
    rows, batch_rows, kills = 200_000, 1_000, 8
    data = transactions_like(rows)
    servers: list[roo.Server] = [roo.serve(config)]
    wanted = threading.Semaphore(0)
    killed: list[int] = []
    stop = threading.Event()

    def killer() -> None:
        while len(killed) < kills and wanted.acquire(timeout=120):
            if stop.is_set():
                return
            servers[-1].stop(kill=True)
            killed.append(servers[-1].process.returncode)
            servers.append(roo.serve(config))

    thread = threading.Thread(target=killer)
    thread.start()
    marks = [rows * (k + 1) // (kills + 2) for k in range(kills)]
    progress = [0]
    resent = [0]

    def on_progress(accepted: int) -> None:
        # Rows accepted but not durable when the daemon died are sent again.
        resent[0] += max(0, progress[0] - accepted)
        progress[0] = accepted
        # A kill each time the put passes the next mark (mid-stream,
        # between checkpoints, wherever the daemon then is).
        if marks and accepted >= marks[0]:
            marks.pop(0)
            wanted.release()

    try:
        with roo.connect(servers[0].flight, TOKEN) as c:
            sent = c.put(data, pipeline="sink", stream="feed-1", batch_rows=batch_rows,
                         resume_timeout=120, on_progress=on_progress)
        assert sent == rows
        stop.set()
        wanted.release()
        thread.join()
        assert killed == [-9] * kills, killed
        with roo.connect(servers[-1].flight, TOKEN) as c:
            again = c.put(data, pipeline="sink", stream="feed-1", batch_rows=batch_rows)
        assert again == rows
    finally:
        stop.set()
        wanted.release()
        thread.join()
        for s in servers:
            s.stop()
    with roo.serve(config) as reader_server, reader_server.connect(TOKEN) as c:
        out = c.output("sink")
    ids = out.column("txn_id").to_pylist()
    assert len(ids) == rows, f"{len(ids)} rows published for {rows} sent"
    assert ids == data.column("txn_id").to_pylist(), "every row once, in order"
    print(f"named put: {rows} rows, {kills} SIGKILLs, {resent[0]} rows sent again (accepted, not yet durable, at a kill); "
          f"published {len(ids)}, duplicates 0, lost 0")


def test_a_named_put_continues_a_stream_at_an_offset_and_refuses_a_gap(client: roo.Client,
                                                                        transactions: pa.Table):
    head, tail = transactions.slice(0, 300), transactions.slice(300, 200)
    assert client.put(head, pipeline="sink", stream="offsets-1") == 300
    assert client.put(tail, pipeline="sink", stream="offsets-1", offset=300) == 200
    with pytest.raises(roo.RooError, match="has 500 rows durable but the data starts at its row 900"):
        client.put(tail, pipeline="sink", stream="offsets-1", offset=900)
    with pytest.raises(roo.InvalidInputError, match="stream name"):
        client.put(tail, pipeline="sink", stream="two words")


def test_put_refuses_data_without_the_pipelines_columns(client: roo.Client, transactions: pa.Table):
    with pytest.raises(roo.InvalidInputError, match="no column 'amount'"):
        client.put(transactions.drop_columns(["amount"]), pipeline="sink")


def test_put_into_a_pipeline_that_takes_no_puts_is_refused(client: roo.Client, transactions: pa.Table):
    with pytest.raises(roo.NotFoundError, match="nope"):
        client.put(transactions, pipeline="nope")
