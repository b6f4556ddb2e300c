"""Raw card transactions, as the card network sends them: what
`examples/fraud/train.py` trains on and the tests cross-check roo's
features with. The same kind of stream as roo's `stream = "transactions"`
generator: skewed card and merchant activity, and bursts of fraud (a
compromised card: 5-15 large transactions seconds apart at many merchants).

Columns and types match roo's generator: txn_id, card_id, merchant_id, ts
(int64, µs since the epoch), amount, merchant_category, hour_of_day,
is_online, is_international (float32), and the label is_fraud (int64).
"""
import numpy as np
import pyarrow as pa

US = 1_000_000
DAY = 86_400 * US


def transactions(n, days=30, cards=20_000, merchants=2_000, bursts=None, seed=7,
                 start_us=1_790_000_000 * US):
    rng = np.random.default_rng(seed)
    bursts = bursts if bursts is not None else max(1, n // 2000)
    normal = n - bursts * 10
    ts = np.sort(rng.integers(start_us, start_us + days * DAY, normal))
    card = np.minimum((rng.random(normal) ** 3 * cards).astype(np.int64), cards - 1)
    merchant = np.minimum((rng.random(normal) ** 2 * merchants).astype(np.int64), merchants - 1)
    amount = np.exp(3.5 + 1.1 * rng.standard_normal(normal))
    online = rng.random(normal) < 0.3
    intl = rng.random(normal) < 0.05
    fraud = np.zeros(normal, dtype=np.int64)
    parts = [(ts, card, merchant, amount, online, intl, fraud)]
    for _ in range(bursts):
        k = int(rng.integers(5, 16))
        t0 = int(rng.integers(start_us, start_us + days * DAY))
        bts = t0 + np.cumsum(rng.integers(1 * US, 90 * US, k))
        parts.append((
            bts,
            np.full(k, int(rng.integers(0, cards)), dtype=np.int64),
            rng.integers(0, merchants, k),
            np.exp(3.5 + 1.1 * rng.standard_normal(k)) * 6.0,
            rng.random(k) < 0.8,
            rng.random(k) < 0.4,
            np.ones(k, dtype=np.int64),
        ))
    ts, card, merchant, amount, online, intl, fraud = (np.concatenate(c) for c in zip(*parts))
    order = np.argsort(ts, kind="stable")
    ts, card, merchant = ts[order], card[order], merchant[order]
    amount, online, intl, fraud = amount[order], online[order], intl[order], fraud[order]
    return pa.table({
        "txn_id": pa.array(np.arange(len(ts), dtype=np.int64)),
        "card_id": pa.array(card.astype(np.int64)),
        "merchant_id": pa.array(merchant.astype(np.int64)),
        "ts": pa.array(ts.astype(np.int64)),
        "amount": pa.array((np.round(amount * 100) / 100).astype(np.float32)),
        "merchant_category": pa.array((merchant % 40).astype(np.float32)),
        "hour_of_day": pa.array(((ts // (3600 * US)) % 24).astype(np.float32)),
        "is_online": pa.array(online.astype(np.float32)),
        "is_international": pa.array(intl.astype(np.float32)),
        "is_fraud": pa.array(fraud),
    })
