"""The engine: the ``roo`` binary in this package, a daemon for a notebook
(:func:`serve`) and batch scoring (:func:`score_file`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from ._client import Client
from ._errors import RooError
from . import _models

_PACKAGED = Path(__file__).resolve().parent / "_bin" / "roo"


def binary() -> Path:
    """The ``roo`` engine: ``$ROO_BINARY`` when set, else the one shipped in
    this package, else a ``roo`` executable (not a Python launcher) on the
    PATH."""
    given = os.environ.get("ROO_BINARY")
    if given:
        return Path(given)
    if _PACKAGED.is_file():
        return _PACKAGED
    found = shutil.which("roo")
    if found:
        with open(found, "rb") as f:
            if f.read(4) == b"\x7fELF":
                return Path(found)
    raise RooError(
        "no roo engine in this install (roo/_bin/roo is missing): pip install the package from a "
        "checkout (pip install ./python) or set ROO_BINARY to a built roo"
    )


class Server:
    """A ``roo serve`` started from a config file, as a context manager:
    ready on entry (every pipeline started, its endpoints bound), drained
    and stopped on exit (SIGTERM: sources stop, queues drain, files close).

    ``ready`` holds what the daemon reported (``flight``, ``metrics``,
    ``online_http``, ``online_grpc``, ``pipelines``); ``log`` is the path
    of its stderr."""

    def __init__(self, config: str | Path, *, ready_timeout: float = 120.0, env: dict[str, str] | None = None):
        self.config = Path(config)
        self._dir = tempfile.TemporaryDirectory(prefix="roo-serve-")
        self._tail: str | None = None
        self.log = Path(self._dir.name) / "roo.log"
        ready_file = Path(self._dir.name) / "ready.json"
        self._log = open(self.log, "wb")
        self.process = subprocess.Popen(
            [str(binary()), "serve", "--config", str(self.config), "--ready-file", str(ready_file)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        deadline = time.monotonic() + ready_timeout
        while not ready_file.exists():
            if self.process.poll() is not None:
                self.stop()
                raise RooError(f"roo serve --config {self.config} exited with status "
                               f"{self.process.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop(kill=True)
                raise RooError(f"roo serve --config {self.config} was not ready after {ready_timeout:.0f} s: "
                               f"{self.log_tail()}")
            time.sleep(0.02)
        self.ready: dict[str, Any] = json.loads(ready_file.read_text())

    @property
    def flight(self) -> str:
        """The Flight endpoint's ``grpc://HOST:PORT`` (the config's ``[flight]``)."""
        addr = self.ready.get("flight")
        if not addr:
            raise RooError(f"{self.config} has no [flight] section: nothing to connect to")
        return f"grpc://{addr}"

    def connect(self, token: str | None = None) -> Client:
        """A :class:`Client` of this server's Flight endpoint."""
        return Client(self.flight, token)

    def log_tail(self, lines: int = 50) -> str:
        """The last lines the daemon logged (kept once it has stopped)."""
        if self._tail is not None:
            return self._tail
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:]) or "(nothing logged)"

    def stop(self, timeout: float = 60.0, *, kill: bool = False) -> int:
        """Drains and stops the daemon (SIGTERM; SIGKILL with ``kill`` or
        past ``timeout``); returns its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        if self._tail is None:
            self._tail = self.log_tail()
            self._dir.cleanup()
        return self.process.returncode

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        status = self.stop()
        if status != 0 and exc[0] is None:
            raise RooError(f"roo serve exited with status {status}: {self.log_tail()}")

    def __del__(self) -> None:
        if getattr(self, "process", None) is not None and self.process.poll() is None:
            self.process.kill()


def serve(config: str | Path, **kwargs: Any) -> Server:
    """Starts ``roo serve --config CONFIG`` and waits until it is ready.
    Use as ``with roo.serve("roo.toml") as server: c = server.connect()``."""
    return Server(config, **kwargs)


def run(*args: str | os.PathLike) -> str:
    """Runs the engine with ``args`` (``roo.run("score", "--config", ...)``,
    anything the ``roo`` command takes) and returns what it printed;
    raises :class:`RooError` with roo's message when it fails."""
    command = [str(binary()), *(os.fspath(a) for a in args)]
    done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if done.returncode != 0:
        message = done.stderr.strip().removeprefix("Error: ").strip() or f"exit status {done.returncode}"
        raise RooError(f"roo {os.fspath(args[0]) if args else ''}: {message}")
    return done.stdout


def score_file(model: Any, input: str | Path, output: str | Path, *, threads: int | None = None,
               device: str | None = None, dead_letters: str | Path | None = None,
               features: Sequence[str] | None = None, extra: Sequence[str] = ()) -> Path:
    """``roo score``: scores the file ``input`` (CSV, NDJSON, Parquet, Arrow
    IPC, raw f32) into ``output`` (Parquet, Arrow IPC, CSV, by extension)
    with ``model`` (a model object, or a model file's path). Returns
    ``output``; raises :class:`RooError` with roo's message on failure."""
    with tempfile.TemporaryDirectory(prefix="roo-score-") as tmp:
        if isinstance(model, (str, os.PathLike)) and features is None:
            model_path = Path(model)
        else:
            body, suffix = _models.export(model, features)
            model_path = Path(tmp) / f"model{suffix or '.bin'}"
            model_path.write_bytes(body)
        command: list[str | os.PathLike] = ["score", "--model", model_path, "--input", input, "--output", output]
        if threads is not None:
            command += ["--threads", str(threads)]
        if device is not None:
            command += ["--device", device]
        if dead_letters is not None:
            command += ["--dead-letters", dead_letters]
        run(*command, *extra)
    return Path(output)
