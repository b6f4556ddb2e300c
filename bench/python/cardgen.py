"""Synthetic card-transaction events: 30 float features and a fraud label.

Shared by the golden-fixture script, the bundled example and the benchmarks,
so every model roo ships or measures is trained on the same kind of data.
Values are float32-representable: what the libraries see is what roo sees.
"""
import numpy as np

FEATURES = [
    "amount", "amount_log", "hour_of_day", "day_of_week", "merchant_category",
    "merchant_risk", "distance_from_home_km", "distance_from_last_km",
    "card_age_days", "account_age_days", "txn_count_1h", "txn_count_24h",
    "spend_1h", "spend_24h", "spend_7d_avg", "amount_over_avg", "is_online",
    "is_international", "chip_used", "pin_used", "device_trust", "ip_risk",
    "velocity_score", "failed_attempts_24h", "country_mismatch",
    "new_merchant", "night_time", "cross_border_fee", "credit_utilisation",
    "prior_chargebacks",
]


def card_transactions(n, seed=7, nan_fraction=0.02):
    """Returns (X float32 [n, 30] with some NaNs, y int labels [n])."""
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(3.5, 1.2, n)
    hour = rng.integers(0, 24, n).astype(float)
    cols = {
        "amount": amount,
        "amount_log": np.log1p(amount),
        "hour_of_day": hour,
        "day_of_week": rng.integers(0, 7, n).astype(float),
        "merchant_category": rng.integers(0, 40, n).astype(float),
        "merchant_risk": rng.beta(2, 8, n),
        "distance_from_home_km": rng.exponential(20, n),
        "distance_from_last_km": rng.exponential(35, n),
        "card_age_days": rng.integers(1, 3000, n).astype(float),
        "account_age_days": rng.integers(1, 6000, n).astype(float),
        "txn_count_1h": rng.poisson(0.7, n).astype(float),
        "txn_count_24h": rng.poisson(4, n).astype(float),
        "spend_1h": rng.lognormal(2.5, 1.5, n),
        "spend_24h": rng.lognormal(4.0, 1.2, n),
        "spend_7d_avg": rng.lognormal(3.4, 0.8, n),
        "amount_over_avg": rng.normal(1.0, 0.6, n),
        "is_online": rng.integers(0, 2, n).astype(float),
        "is_international": (rng.random(n) < 0.1).astype(float),
        "chip_used": rng.integers(0, 2, n).astype(float),
        "pin_used": rng.integers(0, 2, n).astype(float),
        "device_trust": rng.random(n),
        "ip_risk": rng.beta(1.5, 6, n),
        "velocity_score": rng.gamma(2.0, 1.0, n),
        "failed_attempts_24h": rng.poisson(0.2, n).astype(float),
        "country_mismatch": (rng.random(n) < 0.07).astype(float),
        "new_merchant": (rng.random(n) < 0.3).astype(float),
        "night_time": ((hour < 6) | (hour > 22)).astype(float),
        "cross_border_fee": rng.exponential(0.5, n),
        "credit_utilisation": rng.random(n),
        "prior_chargebacks": rng.poisson(0.1, n).astype(float),
    }
    X = np.stack([cols[f] for f in FEATURES], axis=1)
    logit = (
        -4.0
        + 0.9 * np.log1p(cols["amount"]) / 3
        + 3.0 * cols["merchant_risk"]
        + 0.015 * np.minimum(cols["distance_from_home_km"], 200)
        + 1.2 * cols["is_international"] * cols["is_online"]
        + 2.0 * cols["ip_risk"]
        + 0.5 * cols["failed_attempts_24h"]
        + 1.5 * cols["country_mismatch"]
        - 1.0 * cols["device_trust"]
        + 0.7 * cols["night_time"]
        + 0.4 * (cols["amount_over_avg"] > 2)
        + 0.8 * cols["prior_chargebacks"]
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    # Missing values where real feeds have gaps (enrichment misses, new cards).
    for f in ("distance_from_home_km", "device_trust", "ip_risk", "spend_7d_avg"):
        j = FEATURES.index(f)
        X[rng.random(n) < nan_fraction, j] = np.nan
    return X.astype(np.float32), y
