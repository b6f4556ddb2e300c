"""score() hands back the kind that came in, with its types, index and
row order; readers, datasets and paths stream."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

import roo
from conftest import COLUMNS, transactions_like


def reference_scores(client: roo.Client, table: pa.Table) -> np.ndarray:
    return client.score(table, pipeline="cards").column("score").to_numpy()


def test_pandas_keeps_dtypes_index_and_order(client: roo.Client, transactions: pa.Table):
    df = transactions.to_pandas()
    df["segment"] = pd.Categorical(np.where(df["amount"] > 50, "big", "small"))
    df["flag"] = df["is_online"].astype(bool)
    df["amount32"] = df["amount"].astype(np.float32)
    # A shuffled, non-default index: it must come back as it went.
    df = df.sample(frac=1.0, random_state=3)
    df.index = pd.Index([f"row{i}" for i in range(len(df))], name="key")
    out = client.score(df, pipeline="cards")
    assert isinstance(out, pd.DataFrame)
    assert out.index.equals(df.index)
    pd.testing.assert_frame_equal(out[df.columns], df)
    assert out["score"].dtype == np.float32
    expected = reference_scores(client, pa.Table.from_pandas(df, preserve_index=False))
    np.testing.assert_array_equal(out["score"].to_numpy(), expected)
    assert out["model_version"].nunique() == 1


def test_polars_keeps_dtypes_and_order(client: roo.Client, transactions: pa.Table):
    df = pl.from_arrow(transactions).with_columns(
        pl.col("hour_of_day").cast(pl.Int32), pl.col("amount").cast(pl.Float32)
    ).reverse()
    out = client.score(df, pipeline="cards")
    assert isinstance(out, pl.DataFrame)
    assert out.select(df.columns).equals(df)
    assert out.schema["hour_of_day"] == pl.Int32 and out.schema["amount"] == pl.Float32
    np.testing.assert_array_equal(out["score"].to_numpy(), reference_scores(client, df.to_arrow()))


def test_pyarrow_kinds(client: roo.Client, transactions: pa.Table):
    table = transactions
    out = client.score(table, pipeline="cards", batch_rows=333)
    assert isinstance(out, pa.Table)
    assert out.select(table.column_names).equals(table)
    batch = table.slice(100, 50).combine_chunks().to_batches()[0]
    one = client.score(batch, pipeline="cards")
    assert isinstance(one, pa.RecordBatch) and one.num_rows == 50
    np.testing.assert_array_equal(one.column(one.schema.get_field_index("score")).to_numpy(),
                                  out.column("score").to_numpy()[100:150])
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=128))
    streamed = client.score(reader, pipeline="cards")
    assert isinstance(streamed, pa.RecordBatchReader)
    assert streamed.read_all().column("score").equals(out.column("score"))


def test_numpy_in_scores_out(client: roo.Client, transactions: pa.Table):
    features = np.column_stack([transactions.column(c).to_numpy() for c in COLUMNS[1:]]).astype(np.float32)
    # The fraud model reads its features by name: an array has none, so
    # the version deployed with names given reads it by position instead.
    from conftest import FRAUD

    with pytest.raises(roo.InvalidInputError, match="needs feature 'amount'"):
        client.score(features, pipeline="cards")
    text = (FRAUD / "model.json").read_text()
    import json

    doc = json.loads(text)
    doc["learner"]["feature_names"] = []
    doc["learner"]["feature_types"] = []
    positional = client.deploy(json.dumps(doc).encode())
    got = client.score(features, model=positional)
    assert isinstance(got, np.ndarray) and got.shape == (transactions.num_rows,)
    np.testing.assert_array_equal(got, reference_scores(client, transactions))


def test_datasets_and_paths_stream_and_output_writes_a_file(client: roo.Client, tmp_path: Path):
    table = transactions_like(20_000)
    for i, part in enumerate(table.to_batches(max_chunksize=5_000)):
        pq.write_table(pa.Table.from_batches([part]), tmp_path / f"part-{i}.parquet")
    expected = reference_scores(client, table)
    from_dataset = client.score(ds.dataset(tmp_path, format="parquet"), pipeline="cards")
    assert isinstance(from_dataset, pa.RecordBatchReader)
    got = from_dataset.read_all()
    assert got.column("txn_id").to_pylist() == table.column("txn_id").to_pylist()
    np.testing.assert_array_equal(got.column("score").to_numpy(), expected)
    out = tmp_path / "scored" / "all.parquet"
    out.parent.mkdir()
    rows = client.score(str(tmp_path), pipeline="cards", output=out)
    assert rows == table.num_rows
    assert pq.ParquetFile(out).metadata.num_row_groups == 1, "replies gathered into one row group"
    written = pq.read_table(out)
    np.testing.assert_array_equal(written.column("score").to_numpy(), expected)
    assert not list(out.parent.glob(".*partial")), "the partial file was left behind"


def test_unscorable_inputs_are_refused_before_sending(client: roo.Client):
    with pytest.raises(roo.InvalidInputError, match="cannot score a builtins.list"):
        client.score([1, 2, 3], pipeline="cards")
    with pytest.raises(roo.InvalidInputError, match="expected 2"):
        client.score(np.zeros(5), pipeline="cards")
    with pytest.raises(roo.InvalidInputError, match="model= .* or pipeline="):
        client.score(np.zeros((1, 30)))


def test_chain_runs_the_pipelines_operators_and_keeps_the_kind(client: roo.Client, transactions: pa.Table):
    def audited() -> int:
        return next(o["audit_records"] for o in client.stats("cards")[0]["operators"] if o["kind"] == "audit")

    df = transactions.slice(0, 300).to_pandas()
    df.index = df.index + 1000
    before = audited()
    out = client.score(df, pipeline="cards", chain=True, batch_rows=64)
    assert isinstance(out, pd.DataFrame) and out.index.equals(df.index)
    # The pipeline's input types are float32; the frame's own come back.
    pd.testing.assert_frame_equal(out[df.columns], df)
    np.testing.assert_array_equal(out["score"].to_numpy(),
                                  reference_scores(client, transactions.slice(0, 300)))
    # On record: the chain's audit operator wrote each row before its reply.
    assert audited() - before == 300
    with pytest.raises(roo.InvalidInputError, match="give pipeline="):
        client.score(df, model="sha256:00", chain=True)
