"""Bad tokens, unknown pipelines and missing features raise roo's
documented exceptions with roo's message, not gRPC dumps."""

from __future__ import annotations

import pyarrow as pa
import pytest

import roo
from conftest import TOKEN


def test_no_token_and_a_wrong_token_are_auth_errors(server: roo.Server):
    with pytest.raises(roo.AuthError, match="no credentials") as caught:
        roo.connect(server.flight).models()
    assert caught.value.code == "UNAUTHENTICATED"
    assert isinstance(caught.value, PermissionError)
    with pytest.raises(roo.AuthError, match="handshake refused"):
        roo.connect(server.flight, token="tester:not-the-secret")
    with pytest.raises(roo.AuthError):
        roo.connect(server.flight, token="just-a-wrong-secret").stats()
    # The bearer secret alone works as well as NAME:SECRET.
    assert roo.connect(server.flight, token=TOKEN.split(":", 1)[1]).models()["pipelines"]


def test_unknown_pipeline_and_model_are_not_found(client: roo.Client, transactions: pa.Table):
    with pytest.raises(roo.NotFoundError, match='"nope" names no pipeline') as caught:
        client.score(transactions, pipeline="nope")
    assert caught.value.code == "NOT_FOUND" and isinstance(caught.value, LookupError)
    # roo's words only: none of pyarrow's or gRPC's context.
    assert "gRPC" not in str(caught.value) and "debug context" not in str(caught.value)
    with pytest.raises(roo.NotFoundError):
        client.score(transactions, model="sha256:" + "0" * 64)
    with pytest.raises(roo.NotFoundError):
        client.stats("nope")
    with pytest.raises(roo.NotFoundError):
        client.audit("cards", id="no-such-transaction")


def test_missing_feature_is_invalid_input(client: roo.Client, transactions: pa.Table):
    with pytest.raises(roo.InvalidInputError, match="needs feature 'amount' but the input has no such column") as e:
        client.score(transactions.drop_columns(["amount"]), pipeline="cards")
    assert e.value.code == "INVALID_ARGUMENT" and isinstance(e.value, ValueError)
    with pytest.raises(roo.InvalidInputError, match="column 'amount'"):
        client.score(transactions.set_column(1, "amount", pa.array(["x"] * transactions.num_rows)),
                     pipeline="cards")


def test_a_server_that_is_not_there_is_unavailable():
    from conftest import free_port

    with pytest.raises(roo.UnavailableError):
        roo.connect(f"grpc://127.0.0.1:{free_port()}").models()
