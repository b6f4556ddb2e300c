"""roo from Python: deploy the model you trained, score data with it, feed
live pipelines, read what they wrote.

    import roo
    c = roo.connect("grpc://127.0.0.1:7312", token="NAME:SECRET")
    version = c.deploy(model)                  # a model object or a path
    c.deploy(model, pipeline="cards")          # and make it a pipeline's model
    scored = c.score(df, model=version)        # pandas, polars, pyarrow, numpy
    c.put(df, pipeline="flight")               # into a live pipeline
    table = c.output("cards")                  # what its sinks published
    c.audit("live", id="t123")                 # a decision on record

The engine ships in the package: ``roo.serve(config)`` starts a daemon,
``roo.score_file(...)`` scores a file, ``roo.run(...)`` runs any ``roo``
command, and ``roo`` is on the PATH.
"""

from ._client import Client, connect
from ._errors import (
    AuthError,
    BusyError,
    InvalidInputError,
    ModelError,
    NotFoundError,
    RooError,
    ServerError,
    UnavailableError,
)
from ._models import export as export_model
from ._serve import Server, binary, run, score_file, serve

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "BusyError",
    "Client",
    "InvalidInputError",
    "ModelError",
    "NotFoundError",
    "RooError",
    "Server",
    "ServerError",
    "UnavailableError",
    "binary",
    "connect",
    "export_model",
    "run",
    "score_file",
    "serve",
]
