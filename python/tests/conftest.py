"""A real `roo serve` for the tests, started through `roo.serve`.

The engine is `$ROO_BINARY` (the Rust test that runs this suite,
appliance/tests/python_package.rs, points it at the `roo` cargo built) or
the one in the installed package. The daemon serves Flight with a token,
and three pipelines: `cards` (the bundled fraud model, fed by DoPut, its
decisions on record in an audit log), `plain` (the same model, no token
needed for nothing: every pipeline shares the endpoint) and `sink`, fed by
DoPut into Arrow files (the put-resume test restarts it).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pyarrow.csv as pacsv
import pytest

import roo

CHECKOUT = Path(__file__).resolve().parents[2]
FRAUD = CHECKOUT / "examples" / "fraud"
TOKEN = "tester:s3cret-for-tests"

COLUMNS = (
    "txn_id,amount,amount_log,hour_of_day,day_of_week,merchant_category,merchant_risk,distance_from_home_km,"
    "distance_from_last_km,card_age_days,account_age_days,txn_count_1h,txn_count_24h,spend_1h,spend_24h,"
    "spend_7d_avg,amount_over_avg,is_online,is_international,chip_used,pin_used,device_trust,ip_risk,"
    "velocity_score,failed_attempts_24h,country_mismatch,new_merchant,night_time,cross_border_fee,"
    "credit_utilisation,prior_chargebacks"
).split(",")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(dir: Path, port: int, checkpoints: bool = False) -> Path:
    """The daemon's config in ``dir``; ``checkpoints``: a state directory
    there, a checkpoint every 0.2 s."""
    columns = ", ".join(f'"{c}:string"' if c == "txn_id" else f'"{c}"' for c in COLUMNS)
    state = 'state_dir = "state"\ncheckpoint_secs = 0.2' if checkpoints else ""
    config = dir / "roo.toml"
    config.write_text(f"""
[server]
threads = 2
{state}

[flight]
listen = "127.0.0.1:{port}"
model_dir = "models"
models_max = 64

[[flight.token]]
name = "tester"
secret = "s3cret-for-tests"

# Online requests: score(chain=True) runs the pipeline's chain (Flight
# ["online", P]); the V2 endpoint itself is the online tests' concern.
[online]
grpc = "127.0.0.1:0"

[[pipeline]]
name = "cards"
model = "{FRAUD / 'model.json'}"
device = "cpu"
max_rows = 1024

[pipeline.source]
kind = "flight"
columns = [{columns}]

[pipeline.audit]
dir = "audit"
id = "txn_id"
segment_secs = 1

[[pipeline.sink]]
kind = "files"
dir = "out/cards"
format = "arrow"
rotate_secs = 1

[pipeline.dead_letters]
dir = "out/dead"

[[pipeline]]
name = "sink"
model = "{FRAUD / 'model.json'}"
device = "cpu"
max_rows = 512

[pipeline.source]
kind = "flight"
columns = [{columns}]

[[pipeline.sink]]
kind = "files"
dir = "out/sink"
format = "arrow"
rotate_secs = 1
""")
    return config


@pytest.fixture(scope="session")
def daemon_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("daemon")


@pytest.fixture(scope="session")
def config(daemon_dir: Path) -> Path:
    return write_config(daemon_dir, free_port())


@pytest.fixture(scope="session")
def server(config: Path):
    with roo.serve(config) as s:
        yield s


@pytest.fixture()
def client(server: roo.Server):
    with server.connect(TOKEN) as c:
        yield c


@pytest.fixture(scope="session")
def transactions():
    """The bundled 2,000 transactions, as a pyarrow Table (txn_id text,
    the 30 features float64)."""
    return pacsv.read_csv(FRAUD / "transactions.csv")


def transactions_like(rows: int):
    """`rows` transactions shaped like the bundled ones (their features
    repeated), each with its own txn_id, as a pyarrow Table."""
    import pyarrow as pa

    base = pacsv.read_csv(FRAUD / "transactions.csv")
    reps = -(-rows // base.num_rows)
    table = pa.concat_tables([base] * reps).slice(0, rows)
    ids = pa.array([f"t{i:09d}" for i in range(rows)])
    return table.set_column(table.schema.get_field_index("txn_id"), "txn_id", ids)
