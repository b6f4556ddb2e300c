"""The ``roo`` command a wheel puts on the PATH: it becomes the engine."""

from __future__ import annotations

import os
import sys

from ._errors import RooError
from ._serve import binary


def main() -> None:
    try:
        engine = str(binary())
    except RooError as e:
        sys.stderr.write(f"roo: {e}\n")
        raise SystemExit(2) from None
    # exec: signals (Ctrl-C, SIGTERM's drain) and the exit status are the engine's own.
    os.execv(engine, [engine, *sys.argv[1:]])
