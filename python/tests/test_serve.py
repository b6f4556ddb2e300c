"""The engine in the package: roo.serve for a notebook, roo.score_file for
batch, and what a pipeline wrote: output, audit, stats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import roo
from conftest import FRAUD, TOKEN, free_port, transactions_like, write_config


def test_binary_is_the_engine():
    import subprocess

    out = subprocess.run([str(roo.binary()), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("roo ")


def test_score_file_matches_the_daemon(client: roo.Client, transactions: pa.Table, tmp_path: Path):
    import xgboost as xgb

    out = roo.score_file(FRAUD / "model.json", FRAUD / "transactions.csv", tmp_path / "scored.parquet")
    batch = pq.read_table(out)
    daemon = client.score(transactions, pipeline="cards")
    np.testing.assert_array_equal(batch.column("score").to_numpy(), daemon.column("score").to_numpy())
    # A model object goes through a temporary file.
    booster = xgb.Booster(model_file=str(FRAUD / "model.json"))
    again = pq.read_table(roo.score_file(booster, FRAUD / "transactions.csv", tmp_path / "again.parquet"))
    assert again.column("score").equals(batch.column("score"))
    with pytest.raises(roo.RooError, match="roo score: .*no-such-file.csv"):
        roo.score_file(FRAUD / "model.json", tmp_path / "no-such-file.csv", tmp_path / "x.parquet")


def test_serve_starts_drains_and_reports_a_bad_config(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[[pipeline]]\nname = \"x\"\nmodel = \"missing.json\"\n[pipeline.source]\nkind = \"generator\"\n")
    with pytest.raises(roo.RooError, match="missing.json"):
        roo.serve(bad)
    config = write_config(tmp_path, free_port())
    with roo.serve(config) as server:
        assert [p["name"] for p in server.ready["pipelines"]] == ["cards", "sink"]
        with server.connect(TOKEN) as c:
            assert c.put(transactions_like(3_000), pipeline="sink") == 3_000
    assert server.process.returncode == 0
    # Drained on exit: every accepted row is in the published output.
    with roo.serve(config) as server, server.connect(TOKEN) as c:
        assert c.output("sink").num_rows == 3_000


def test_output_audit_and_stats_of_a_live_pipeline(tmp_path: Path):
    config = write_config(tmp_path, free_port())
    data = transactions_like(5_000)
    with roo.serve(config) as server, server.connect(TOKEN) as c:
        assert c.put(data, pipeline="cards") == 5_000
        stats = c.stats("cards")
        assert stats[0]["pipeline"] == "cards" and stats[0]["events_in"] == 5_000
    with roo.serve(config) as server, server.connect(TOKEN) as c:
        out = c.output("cards")
        assert out.column("txn_id").to_pylist() == data.column("txn_id").to_pylist()
        record = c.audit("cards", id="t000004321")
        assert record.num_rows == 1
        row = record.to_pylist()[0]
        assert row["audit_id"] == "t000004321"
        assert row["score"] == out.column("score")[4321].as_py()
        assert row["model_version"] == server.ready["pipelines"][0]["model_version"]
        every = c.audit("cards")
        assert every.num_rows == 5_000
        assert c.dead_letters("cards").num_rows == 0
