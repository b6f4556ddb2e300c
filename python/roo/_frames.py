"""Data in, data out: pandas, polars, pyarrow and numpy as Arrow streams,
and the scored stream back as the kind that came in."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import pyarrow as pa

from ._errors import InvalidInputError


@dataclass
class Input:
    """An input as a stream of record batches, and how to hand the scored
    stream back in the input's own kind (collected, or for a streamed
    input a reader over the replies as they come: bounded memory)."""

    reader: pa.RecordBatchReader
    restore: Callable[[pa.Schema, Iterator[pa.RecordBatch]], Any]


def _module(obj: Any) -> str:
    return type(obj).__module__.split(".")[0]


def _table_result(schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> pa.Table:
    whole = list(batches)
    return pa.Table.from_batches(whole, schema=whole[0].schema if whole else schema)


def _reader_of_table(table: pa.Table) -> pa.RecordBatchReader:
    return pa.RecordBatchReader.from_batches(table.schema, table.to_batches())


def as_input(data: Any) -> Input:
    """``data`` as an :class:`Input`; a clear error for a kind roo does not take."""
    if isinstance(data, pa.Table):
        return Input(_reader_of_table(data), _table_result)
    if isinstance(data, pa.RecordBatch):

        def one_batch(schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> pa.RecordBatch:
            table = _table_result(schema, batches).combine_chunks()
            whole = table.to_batches()
            return whole[0] if whole else pa.RecordBatch.from_pylist([], schema=table.schema)

        reader = pa.RecordBatchReader.from_batches(data.schema, [data])
        return Input(reader, one_batch)
    if isinstance(data, pa.RecordBatchReader):
        return Input(data, _lazy_reader)
    module = _module(data)
    if module == "pandas" and hasattr(data, "columns") and hasattr(data, "index"):
        return _pandas(data)
    if module == "polars" and hasattr(data, "to_arrow"):
        import polars as pl

        table = data.to_arrow()

        def to_polars(schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> Any:
            return pl.from_arrow(_table_result(schema, batches))

        return Input(_reader_of_table(table), to_polars)
    if module == "numpy" and hasattr(data, "ndim"):
        return _numpy(data)
    if module == "pyarrow" and hasattr(data, "scanner") and hasattr(data, "schema"):
        # A pyarrow.dataset.Dataset: scanned batch by batch.
        return Input(_scan(data), _lazy_reader)
    if isinstance(data, (str, os.PathLike)):
        import pyarrow.dataset as ds

        path = os.fspath(data)
        fmt = "csv" if path.endswith(".csv") else "arrow" if path.endswith((".arrow", ".ipc", ".feather")) else "parquet"
        return Input(_scan(ds.dataset(path, format=fmt)), _lazy_reader)
    raise InvalidInputError(
        f"cannot score a {type(data).__module__}.{type(data).__name__}; expected a pandas or polars "
        "DataFrame, a numpy 2-D array, a pyarrow Table, RecordBatch, RecordBatchReader or Dataset, "
        "or the path of a Parquet, Arrow IPC or CSV file or directory"
    )


def _scan(dataset: Any) -> pa.RecordBatchReader:
    """A dataset's batches in order, fragment by fragment, each read on
    this thread with one batch ahead: a scanner's default readahead (and
    its decoding threads running ahead of a slower consumer) holds a
    gigabyte of a wide dataset while the server takes one batch at a time."""

    def batches() -> Iterator[pa.RecordBatch]:
        for fragment in dataset.get_fragments():
            yield from fragment.to_batches(schema=dataset.schema, batch_readahead=1, fragment_readahead=1,
                                           use_threads=False)

    return pa.RecordBatchReader.from_batches(dataset.schema, batches())


def _lazy_reader(schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> pa.RecordBatchReader:
    """A reader over the scored batches as they arrive; its schema is the
    first reply's (read ahead)."""
    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        return pa.RecordBatchReader.from_batches(schema, [])

    def chained() -> Iterator[pa.RecordBatch]:
        yield first
        yield from batches

    return pa.RecordBatchReader.from_batches(first.schema, chained())


def _pandas(df: Any) -> Input:
    table = pa.Table.from_pandas(df, preserve_index=False)
    index = df.index

    def to_pandas(schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> Any:
        out = _table_result(schema, batches).to_pandas()
        # The input's own dtypes for its own columns (Arrow may widen or
        # box some pandas dtypes on the way), its index, its row order.
        for column in df.columns:
            if column in out.columns and out[column].dtype != df[column].dtype:
                try:
                    out[column] = out[column].astype(df[column].dtype)
                except (TypeError, ValueError):
                    pass
        out.index = index
        return out

    return Input(_reader_of_table(table), to_pandas)


def _numpy(array: Any) -> Input:
    import numpy as np

    if array.ndim != 2:
        raise InvalidInputError(f"a numpy array of {array.ndim} dimensions; expected 2 (rows, features)")
    columns = [pa.array(np.ascontiguousarray(array[:, i])) for i in range(array.shape[1])]
    table = pa.Table.from_arrays(columns, names=[f"f{i}" for i in range(array.shape[1])])

    def scores(schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> Any:
        out = _table_result(schema, batches)
        names = [n for n in out.column_names if n == "score" or n.startswith("score_")]
        if names == ["score"]:
            return out.column("score").to_numpy()
        return np.column_stack([out.column(n).to_numpy() for n in names])

    return Input(_reader_of_table(table), scores)


def slices(reader: pa.RecordBatchReader, rows: int) -> Iterator[pa.RecordBatch]:
    """The reader's non-empty batches, cut to at most ``rows`` rows."""
    for batch in reader:
        for start in range(0, batch.num_rows, rows):
            yield batch.slice(start, rows)


def conformer(have: pa.Schema, want: pa.Schema, what: str) -> Callable[[pa.RecordBatch], pa.RecordBatch]:
    """A function giving each batch ``want``'s columns, by name, cast to its
    types (numbers to the pipeline's floats, unchecked for precision as the
    pipeline's own parsers would); a missing column is an error now."""
    missing = [f.name for f in want if f.name not in have.names]
    if missing:
        raise InvalidInputError(
            f"{what}: the data has no column {', '.join(repr(m) for m in missing)}; "
            f"the pipeline takes {', '.join(want.names)}"
        )
    if have == want:
        return lambda batch: batch

    def conform(batch: pa.RecordBatch) -> pa.RecordBatch:
        columns = []
        for field in want:
            column = batch.column(batch.schema.get_field_index(field.name))
            if column.type != field.type:
                try:
                    column = column.cast(field.type, safe=False)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                    raise InvalidInputError(
                        f"{what}: column {field.name!r} is {column.type}; the pipeline takes {field.type} ({e})"
                    ) from None
            columns.append(column)
        return pa.RecordBatch.from_arrays(columns, schema=want)

    return conform
