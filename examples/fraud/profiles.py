"""The customer profile table the "live" pipeline joins (examples/fraud/
profiles.csv): one row per version of a card's profile, valid from
`valid_from` (int64 µs since the epoch) until the card's next version.

Every card has a first version from before the history starts; during the
month of history.py some cards have their limit raised and some have a
chargeback recorded, each a new version from that moment. A backfill
(`roo score --config ... --no-model`) joins each past event with the
profile as it was then; the live stream joins the newest versions.

    python3 examples/fraud/profiles.py    # rewrites examples/fraud/profiles.csv
"""
import pathlib

import numpy as np
import pandas as pd

HERE = pathlib.Path(__file__).resolve().parent
US = 1_000_000
DAY = 86_400 * US
HISTORY_START = 1_790_000_000 * US  # history.py's start_us
CARDS = 20_000


def profiles(cards=CARDS, seed=3):
    rng = np.random.default_rng(seed)
    countries = np.array(["PT", "ES", "FR", "DE", "GB", "US", "BR", "IN"])
    rows = []
    for card in range(cards):
        limit = float(rng.choice([500, 1000, 2500, 5000, 10000, 20000]))
        opened_days_before = int(rng.integers(30, 3650))
        country = str(rng.choice(countries, p=[0.4, 0.15, 0.1, 0.1, 0.08, 0.07, 0.05, 0.05]))
        chargebacks = int(rng.poisson(0.05))
        # The profile export of 30 days before the history: every card opened by then.
        first = HISTORY_START - 30 * DAY
        version = [card, first, limit, opened_days_before - 30, country, chargebacks]
        rows.append(list(version))
        changes = []
        if rng.random() < 0.15:  # limit raised mid-month
            changes.append((HISTORY_START + int(rng.integers(10 * DAY, 20 * DAY)), "limit"))
        if rng.random() < 0.03:  # a chargeback recorded
            changes.append((HISTORY_START + int(rng.integers(0, 30 * DAY)), "chargeback"))
        for t, what in sorted(changes):
            version[1] = t
            version[3] = opened_days_before + (t - HISTORY_START) // DAY
            if what == "limit":
                version[2] = version[2] * 1.5
            else:
                version[5] += 1
            rows.append(list(version))
    return pd.DataFrame(rows, columns=["card_id", "valid_from", "credit_limit", "account_age_days",
                                       "home_country", "prior_chargebacks"])


if __name__ == "__main__":
    df = profiles()
    df.to_csv(HERE / "profiles.csv", index=False)
    print(f"{len(df)} versions of {df.card_id.nunique()} cards -> {HERE / 'profiles.csv'}")
