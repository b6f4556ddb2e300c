"""``roo.connect``: a running ``roo serve`` over Arrow Flight.

Every call goes through pyarrow's Flight client; errors come back as
:mod:`roo`'s exceptions with the server's message.
"""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pyarrow as pa
import pyarrow.flight as flight

from . import _frames, _models
from ._errors import InvalidInputError, ModelError, RooError, ServerError, UnavailableError, translate

#: Rows per batch sent by ``score`` and ``put`` (a batch is scored whole).
BATCH_ROWS = 65_536
#: Rows a Parquet row group of ``score(output=...)`` gathers (~60 MiB of
#: the fraud model's 33 columns held while it fills).
PARQUET_ROW_GROUP_ROWS = 262_144


def connect(location: str, token: str | None = None, *, tls_root_certs: bytes | None = None,
            timeout: float | None = None) -> "Client":
    """A client of the ``roo serve`` at ``location`` (``grpc://HOST:PORT``,
    ``grpc+tls://`` with TLS). ``token`` is ``NAME:SECRET`` of one of the
    server's ``[[flight.token]]``s (a basic-auth handshake gives the bearer
    header), or the secret alone."""
    return Client(location, token, tls_root_certs=tls_root_certs, timeout=timeout)


class Client:
    """A connection to one ``roo serve``. Use as a context manager, or call
    :meth:`close`. Thread-safe: calls may run concurrently."""

    def __init__(self, location: str, token: str | None = None, *, tls_root_certs: bytes | None = None,
                 timeout: float | None = None):
        self.location = location
        self._token = token
        self._tls = tls_root_certs
        self._timeout = timeout
        self._client, self._options = self._open()

    def _open(self) -> tuple[flight.FlightClient, flight.FlightCallOptions]:
        kwargs = {"tls_root_certs": self._tls} if self._tls else {}
        try:
            client = flight.FlightClient(self.location, **kwargs)
            headers = []
            if self._token:
                if ":" in self._token:
                    name, secret = self._token.split(":", 1)
                    headers = [client.authenticate_basic_token(name, secret)]
                else:
                    headers = [(b"authorization", b"Bearer " + self._token.encode())]
        except Exception as e:
            raise translate(e, f"connecting to {self.location}") from None
        return client, flight.FlightCallOptions(headers=headers, timeout=self._timeout)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"roo.Client({self.location!r})"

    # -- actions ---------------------------------------------------------

    def _action(self, kind: str, body: bytes = b"") -> Any:
        try:
            results = list(self._client.do_action(flight.Action(kind, body), self._options))
        except Exception as e:
            raise translate(e, kind) from None
        if not results:
            return None
        return json.loads(results[0].body.to_pybytes())

    def models(self) -> dict[str, Any]:
        """The model each pipeline scores with (``running``) and the models
        uploaded (``stored``: version, size, when, which pipelines use it)."""
        return self._action("list-models")

    def stats(self, pipeline: str | None = None) -> Any:
        """Counters, queue depths and latency: every pipeline's, or one's."""
        return self._action("pipeline-stats", (pipeline or "").encode())

    def input_schema(self, pipeline: str) -> pa.Schema:
        """The columns a pipeline takes (what ``put`` sends, and casts to)."""
        try:
            return self._client.get_schema(flight.FlightDescriptor.for_path(pipeline, "input"), self._options).schema
        except Exception as e:
            raise translate(e, f"the input of {pipeline}") from None

    def deploy(self, model: Any, pipeline: str | None = None, *,
               features: Sequence[str] | None = None) -> str:
        """Uploads ``model`` (a model object, a path or a file's bytes; see
        :func:`roo._models.export`) and returns its version
        (``sha256:…``). With ``pipeline``, also makes it that pipeline's
        model (swapped between two batches; a model that does not fit its
        input raises :class:`ModelError` and the model before keeps
        scoring). ``features`` names the
        features of a model fitted on an unnamed array."""
        body, _ = _models.export(model, features)
        try:
            reply = self._action("upload-model", body)
        except InvalidInputError as e:
            # The server read the file and refused it: a model roo cannot take.
            raise ModelError(e.message, e.code) from None
        version = reply["version"]
        if pipeline is not None:
            try:
                self._action("activate-model", json.dumps({"pipeline": pipeline, "model": version}).encode())
            except InvalidInputError as e:
                # It does not fit the pipeline (a feature its input lacks):
                # refused, and the pipeline's model before keeps scoring.
                raise ModelError(e.message, e.code) from None
        return version

    # -- scoring ---------------------------------------------------------

    def score(self, data: Any, *, model: str | None = None, pipeline: str | None = None,
              chain: bool = False, batch_rows: int = BATCH_ROWS, output: str | Path | None = None) -> Any:
        """Scores ``data`` with a stored model version (``model``) or a
        pipeline's current model (``pipeline``), in row order.

        Returns the kind that came in, with the input's columns, ``score``
        (or ``score_0``…) and ``model_version``: a pandas or polars
        DataFrame (pandas keeps its index), a pyarrow Table or RecordBatch,
        a numpy array of the scores for a numpy array. A RecordBatchReader,
        a Dataset or a path streams: the result is a RecordBatchReader read
        as the server replies, in bounded memory. With ``output`` (a
        ``.parquet``, ``.arrow`` or ``.csv`` path), the scored rows are
        written there as they come and the row count is returned.

        With ``chain=True`` (and ``pipeline=``), each batch runs the
        pipeline's whole chain as online requests do (its features and
        enrichment, the model, shadows, the audit log; its sinks get the
        rows too): the reply holds every column the chain left. The data is
        cast to the pipeline's input columns, as for ``put``; the daemon
        needs an ``[online]`` section."""
        if (model is None) == (pipeline is None):
            raise InvalidInputError("score takes model= (a version from deploy) or pipeline=, not both or neither")
        source = _frames.as_input(data)
        reader = source.reader
        if chain:
            if pipeline is None:
                raise InvalidInputError("score(chain=True) runs a pipeline's chain: give pipeline=, not model=")
            schema = self.input_schema(pipeline)
            conform = _frames.conformer(reader.schema, schema, f"score through {pipeline}'s chain")
            reader = pa.RecordBatchReader.from_batches(schema, (conform(b) for b in source.reader))
            path = ["online", pipeline]
        elif model is not None:
            path = ["models", model]
        else:
            assert pipeline is not None  # one of the two, checked above
            path = [pipeline]
        replies = self._exchange(flight.FlightDescriptor.for_path(*path), reader, batch_rows)
        if output is not None:
            return _write(Path(output), replies)
        return source.restore(source.reader.schema, replies)

    def _exchange(self, descriptor: flight.FlightDescriptor, reader: pa.RecordBatchReader,
                  batch_rows: int) -> Iterator[pa.RecordBatch]:
        """The scored batches, in order: each batch sent, then its replies
        read, on the calling thread. One batch is in flight, so memory is
        bounded whatever the input's size. Lockstep on purpose: pyarrow's
        Flight client must not write on one thread while another reads
        the call to its end (it aborts the process when a write follows
        the call's finish), and overlapping on one thread could deadlock
        against the server's bounded reply queue."""
        try:
            writer, results = self._client.do_exchange(descriptor, self._options)
        except Exception as e:
            raise translate(e, "score") from None
        try:
            writer.begin(reader.schema)
            for batch in _frames.slices(reader, batch_rows):
                writer.write_batch(batch)
                got = 0
                while got < batch.num_rows:
                    chunk = results.read_chunk().data
                    got += chunk.num_rows
                    yield chunk
            writer.done_writing()
            # The stream ends (and its status, if an error, is raised).
            for _ in _rest(results):
                raise ServerError("score: the server sent more rows than it was given")
        except Exception as e:
            status = _status_of(writer, e)
            if isinstance(status, StopIteration):
                raise ServerError("score: the server ended the stream before replying to every row") from None
            raise translate(status, "score") from None
        finally:
            try:
                writer.close()
            except Exception:
                pass  # the call's status was read (and raised) above

    # -- reading what pipelines wrote ----------------------------------------

    def _get(self, ticket: dict[str, Any], reader: bool) -> pa.Table | pa.RecordBatchReader:
        try:
            stream = self._client.do_get(flight.Ticket(json.dumps(ticket).encode()), self._options)
            return stream.to_reader() if reader else stream.read_all()
        except Exception as e:
            raise translate(e, "get") from None

    def output(self, pipeline: str, *, reader: bool = False) -> pa.Table | pa.RecordBatchReader:
        """The rows the pipeline's file sink has published, in order (a
        RecordBatchReader with ``reader=True``, for outputs larger than memory)."""
        return self._get({"pipeline": pipeline, "stream": "output"}, reader)

    def dead_letters(self, pipeline: str) -> pa.Table:
        """The pipeline's published dead letters: source, offset, line, reason, raw bytes."""
        return self._get({"pipeline": pipeline, "stream": "dead_letters"}, False)

    def latest(self, pipeline: str) -> pa.Table:
        """The latest window the pipeline's aggregate emitted (top-K and the like)."""
        return self._get({"pipeline": pipeline, "stream": "latest"}, False)

    def audit(self, pipeline: str, id: str | None = None, *, start: Any = None, end: Any = None) -> pa.Table:
        """Audit records from the pipeline's log: every record of event
        ``id``, or a range of event time (``start``/``end``: RFC 3339 text,
        a datetime, or µs since the epoch; either may be left open). Each
        record holds the inputs as received, the features and snapshots the
        model read, the score, the model version and the device."""
        if id is not None:
            if start is not None or end is not None:
                raise InvalidInputError("audit takes id= or a start/end range, not both")
            return self._get({"audit": pipeline, "id": str(id)}, False)
        ticket: dict[str, Any] = {"audit": pipeline}
        for key, value in (("from", start), ("to", end)):
            if value is not None:
                ticket[key] = value.isoformat() if hasattr(value, "isoformat") else value
        return self._get(ticket, False)

    # -- put -------------------------------------------------------------

    def put(self, data: Any, *, pipeline: str, stream: str | None = None, offset: int = 0,
            batch_rows: int = BATCH_ROWS, resume_timeout: float = 60.0,
            on_progress: Callable[[int], None] | None = None) -> int:
        """Sends ``data`` into a pipeline whose source is ``kind =
        "flight"`` (DoPut) and returns the rows it accepted (all of them).

        Columns are taken by name and cast to the pipeline's input types
        (``input_schema``); other columns are left out.

        Without ``stream``: accepted rows are in the pipeline's queue, on
        their way to its sinks. If the server stops mid-put (a drain:
        SIGTERM, a redeploy) it says how many rows it accepted, and exactly
        those reach its sinks: ``put`` then reconnects (for up to
        ``resume_timeout`` seconds) and resumes from the next row, so every
        row arrives once. A server killed outright (SIGKILL, a crash) says
        nothing: the put raises :class:`UnavailableError` with the rows
        last acknowledged, since rows past them may or may not have reached
        the sinks.

        With ``stream`` (a name: 1-128 printable ASCII characters without
        spaces), exactly once across anything, SIGKILL included: ``data``
        is that stream's rows from row ``offset`` on (0: its start; a later
        put continues a stream with ``offset`` = the rows sent before).
        The server says how many of the stream's rows are durable (in its
        last checkpoint, or published); ``put`` sends from there, keeps
        every row until the server says it is durable, reconnects after
        any failure (for up to ``resume_timeout`` seconds without
        progress) and sends again from what the server then says is
        durable. It returns once every row is durable. The same name and
        the same rows must be given again after a crash of the caller: rows
        already durable are skipped, not sent twice.

        ``on_progress(rows_accepted)`` is called as acknowledgements come
        (rows of ``data``)."""
        source = _frames.as_input(data)
        schema = self.input_schema(pipeline)
        conform = _frames.conformer(source.reader.schema, schema, f"put into {pipeline}")
        state = _PutState(conform(b) for b in _frames.slices(source.reader, batch_rows))
        named = None if stream is None else _Named(stream, offset)
        deadline = time.monotonic() + resume_timeout
        delay = 0.05
        while True:
            done = state.done
            try:
                self._put_stream(pipeline, schema, state, on_progress, named)
                return state.done
            except UnavailableError as e:
                if e.rows_accepted is None and named is None:
                    raise
                if state.done > done:
                    deadline, delay = time.monotonic() + resume_timeout, 0.05
                if time.monotonic() > deadline:
                    raise
                if named is not None:
                    # The call may have failed with the server up (another
                    # call still held the name): not at once again.
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
                self._await_server(deadline, e)

    def _await_server(self, deadline: float, cause: UnavailableError) -> None:
        """Reconnects once the server is back, backing off; raises ``cause``
        (with the rows accepted) past the deadline."""
        delay = 0.05
        while True:
            try:
                self._client.close()
            except Exception:
                pass
            try:
                self._client, self._options = self._open()
                list(self._client.list_actions(self._options))
                return
            except Exception:
                if time.monotonic() + delay > deadline:
                    raise cause from None
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _put_stream(self, pipeline: str, schema: pa.Schema, state: "_PutState",
                    on_progress: Callable[[int], None] | None, named: "_Named | None") -> None:
        """One DoPut stream: the rows kept from the last stream, then the
        rest, each batch sent and its acknowledgement read before the next
        (on this thread: see ``_exchange``; one batch in flight, and the
        server acknowledges every batch). A stop mid-stream is an
        :class:`UnavailableError` whose ``rows_accepted`` counts the
        input's rows accepted in all (``state`` is left at that row, ready
        to resume). A named stream keeps rows until they are durable, and
        starts each call where the server says the stream's durable rows
        end."""
        path = [pipeline] if named is None else [pipeline, named.name]
        try:
            writer, acks = self._client.do_put(flight.FlightDescriptor.for_path(*path), schema, self._options)
        except Exception as e:
            raise _put_error(e, state, None, None) from None
        start = state.done
        acked = 0  # this stream's rows accepted, as last acknowledged

        def ack() -> tuple[int, int] | None:
            buf = acks.read()
            if buf is None:
                return None
            counts = json.loads(buf.to_pybytes())
            return int(counts["rows_accepted"]), int(counts.get("rows_durable", 0))

        try:
            if named is not None:
                opening = ack()
                if opening is None:
                    raise ConnectionError("the server ended the stream before saying where it resumes")
                durable = opening[1]
                if durable < named.offset:
                    raise RooError(f"put: stream {named.name!r} has {durable} rows durable but the data "
                                   f"starts at its row {named.offset}: rows in between were never sent")
                state.accepted(durable - named.offset)
                start = state.done
            sent = 0
            for batch in state.stream():
                writer.write_batch(batch)
                sent += batch.num_rows
                counts = ack()
                if counts is None:
                    raise ConnectionError("the server ended the stream before acknowledging a batch")
                if named is None:
                    acked = counts[0]
                    state.accepted(start + acked)
                else:
                    acked = counts[0] - named.offset - start
                    state.accepted(counts[1] - named.offset)
                if on_progress is not None:
                    on_progress(start + acked)
            writer.done_writing()
            while (counts := ack()) is not None:
                if named is None:
                    acked = max(acked, counts[0])
                else:
                    acked = max(acked, counts[0] - named.offset - start)
                    state.accepted(counts[1] - named.offset)
        except RooError:
            raise
        except Exception as e:
            raise _put_error(_status_of(writer, e), state, start, start + acked, named) from None
        try:
            writer.close()
        except Exception as e:
            raise _put_error(e, state, start, start + acked, named) from None
        if acked != sent:
            raise RooError(f"put: the server acknowledged {acked} of the {sent} rows of the stream")
        if named is not None and state.pending:
            raise RooError(f"put: stream {named.name!r} ended with rows not yet durable")
        state.accepted(start + sent)


class _Named:
    """A named put stream: its name, and the stream row the data starts at."""

    def __init__(self, name: str, offset: int):
        if offset < 0:
            raise ValueError(f"put: offset is {offset}; expected a row number, 0 or more")
        self.name = name
        self.offset = offset


def _rest(results: Any) -> Iterator[Any]:
    """What a Flight stream still holds (nothing, when the reply is whole)."""
    while True:
        try:
            yield results.read_chunk()
        except StopIteration:
            return


def _status_of(writer: Any, e: BaseException) -> BaseException:
    """The error that ended a call: the status ``close`` reads when the
    stream simply ended (or a write failed), else ``e``. The status with
    the rows a stopping server accepted only comes from ``close``."""
    if isinstance(e, flight.FlightError) and _says_rows(e):
        return e
    try:
        writer.close()
    except Exception as status:
        if isinstance(status, (flight.FlightError, pa.ArrowException)):
            return status
    return e


class _PutState:
    """A resumable put's progress: the input's rows accepted (``done``) and
    the batches sent but not yet accepted (``pending``, with the input row
    each starts at), sent again on the next stream."""

    def __init__(self, batches: Iterator[pa.RecordBatch]):
        self._batches = batches
        self.pending: collections.deque[tuple[int, pa.RecordBatch]] = collections.deque()
        self.done = 0
        self._next = 0

    def stream(self) -> Iterator[pa.RecordBatch]:
        """The batches for a new stream: the pending ones, then new ones
        (less the rows already ``done``: a named stream resumed past them)."""
        for _, batch in list(self.pending):
            yield batch
        for batch in self._batches:
            at, self._next = self._next, self._next + batch.num_rows
            if self._next <= self.done:
                continue
            if at < self.done:
                batch, at = batch.slice(self.done - at), self.done
            self.pending.append((at, batch))
            yield batch

    def accepted(self, rows: int) -> None:
        """The input's first ``rows`` rows are accepted: forget them."""
        while self.pending and self.pending[0][0] + self.pending[0][1].num_rows <= rows:
            self.pending.popleft()
        if self.pending and self.pending[0][0] < rows:
            at, head = self.pending.popleft()
            self.pending.appendleft((rows, head.slice(rows - at)))
        self.done = max(self.done, rows)


def _says_rows(e: BaseException) -> bool:
    error = translate(e)
    return isinstance(error, UnavailableError) and error.rows_accepted is not None


def _put_error(e: BaseException, state: _PutState, start: int | None, acked: int | None,
               named: _Named | None = None) -> RooError:
    """The error that ended a put stream begun at input row ``start``;
    ``acked``: the input's rows last acknowledged on it."""
    error = translate(e, "put")
    if not isinstance(error, UnavailableError):
        return error
    if named is not None:
        # A named stream resumes from what the server says is durable
        # when it is back, whatever this call's end said.
        error.rows_accepted = None
        return error
    if error.rows_accepted is not None and start is not None:
        # The server said how many rows of this stream it took: exactly
        # those reach its sinks; the put resumes after them.
        error.rows_accepted += start
        state.accepted(error.rows_accepted)
    elif acked is not None:
        # The server went without saying what it took: the last
        # acknowledgement is a floor, not the count, so no resuming.
        error.rows_accepted = None
        error.message = (f"{error.message} (the server stopped without saying how many rows it took; "
                         f"{acked} rows of the input were acknowledged before)")
        error.args = (error.message,)
    return error


def _write(path: Path, replies: Iterator[pa.RecordBatch]) -> int:
    """Writes the scored batches to ``path`` as they come; the row count.
    Parquet row groups gather up to ``PARQUET_ROW_GROUP_ROWS`` rows (a
    writer keeps every row group's metadata until it closes: fewer, larger
    groups keep that small and read faster)."""
    import pyarrow.csv as pacsv
    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq

    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".pq", ".arrow", ".ipc", ".feather", ".csv"):
        raise InvalidInputError(f"output {path}: unknown format; expected .parquet, .arrow or .csv")
    parquet = suffix in (".parquet", ".pq")
    partial = path.with_name(f".{path.name}.partial")
    writer: Any = None
    held: list[pa.RecordBatch] = []
    held_rows = 0
    rows = 0

    def flush() -> None:
        nonlocal held_rows
        if held:
            writer.write_table(pa.Table.from_batches(held), row_group_size=PARQUET_ROW_GROUP_ROWS)
            held.clear()
            held_rows = 0

    try:
        for batch in replies:
            if writer is None:
                if parquet:
                    writer = pq.ParquetWriter(partial, batch.schema)
                elif suffix == ".csv":
                    writer = pacsv.CSVWriter(partial, batch.schema)
                else:
                    writer = ipc.new_file(partial, batch.schema)
            if parquet:
                held.append(batch)
                held_rows += batch.num_rows
                if held_rows >= PARQUET_ROW_GROUP_ROWS:
                    flush()
            else:
                writer.write(batch)
            rows += batch.num_rows
        if writer is None:
            raise InvalidInputError(f"output {path}: the input had no rows to score")
        if parquet:
            flush()
        writer.close()
        writer = None
        partial.replace(path)
    finally:
        if writer is not None:
            writer.close()
        partial.unlink(missing_ok=True)
    return rows
