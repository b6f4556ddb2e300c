"""A Flight client reading a pipeline's audit log with DoGet tickets.

    audit_flight.py HOST:PORT ID FROM_US TO_US

Prints one JSON line: the rows and score of {"audit": "cards", "id": ID},
the rows of {"audit": "cards", "from": FROM_US, "to": TO_US} (from as
RFC 3339 text, to as µs: both forms), and the error an unknown id gets.
"""
import datetime
import json
import sys

import pyarrow.flight as flight


def main():
    addr, id_, from_us, to_us = sys.argv[1:5]
    client = flight.connect(f"grpc://{addr}")

    def get(ticket):
        return client.do_get(flight.Ticket(json.dumps(ticket).encode())).read_all()

    by_id = get({"audit": "cards", "id": id_})
    start = datetime.datetime.fromtimestamp(int(from_us) / 1e6, tz=datetime.timezone.utc)
    by_range = get({"audit": "cards", "from": start.isoformat(), "to": int(to_us)})
    try:
        get({"audit": "cards", "id": "no-such-id"})
        unknown = "found"
    except (flight.FlightError, KeyError) as e:  # NOT_FOUND is an ArrowKeyError
        unknown = str(e)
    print(json.dumps({
        "id_rows": by_id.num_rows,
        "id_score": by_id.column("score")[0].as_py(),
        "range_rows": by_range.num_rows,
        "unknown": unknown,
    }))


if __name__ == "__main__":
    main()
