"""Realistic offline example data: daily files with seasonality, categoricals, gaps and a drift switch.

Every day is generated from a seed derived from (dataset, date, drift), so the same
day always has the same rows: examples are reproducible without shipping data.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from mlplatform_assets.lib.data.storage import atomic_path


def _rng(dataset: str, day: dt.date, drift: bool) -> np.random.Generator:
    digest = hashlib.sha256(f"{dataset}|{day.isoformat()}|{int(drift)}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _timestamps(rng: np.random.Generator, day: dt.date, n: int) -> pd.Series:
    # Activity peaks in the evening: a mixture of a daytime and an evening bump.
    hours = np.where(rng.random(n) < 0.6, rng.normal(19, 2.5, n), rng.normal(11, 3, n)) % 24
    seconds = np.sort((hours * 3600).astype(np.int64))
    base = pd.Timestamp(day)
    return pd.Series(base + pd.to_timedelta(seconds, unit="s"))


def customer_churn(day: dt.date, rows: int = 1800, drift: bool = False) -> pd.DataFrame:
    """Telecom-style churn: ~20% positives, weekly seasonality, missing values, 4 categoricals."""
    rng = _rng("customer_churn", day, drift)
    weekend = day.weekday() >= 5
    n = int(rows * (0.8 if weekend else 1.05) * rng.uniform(0.95, 1.05))
    regions = np.array(["north", "south", "east", "west", "central", "coastal"])
    region_p = np.array([0.22, 0.2, 0.18, 0.18, 0.12, 0.10])
    plan = rng.choice(["basic", "standard", "premium"], n, p=[0.5, 0.35, 0.15])
    contract = rng.choice(["monthly", "annual", "two_year"], n, p=[0.55, 0.3, 0.15])
    payment = rng.choice(["card", "bank_transfer", "paypal", "voucher"], n, p=[0.45, 0.3, 0.2, 0.05]).astype(object)
    tenure = rng.gamma(2.0, 12.0, n).round(0)
    base_charge = np.select([plan == "basic", plan == "standard"], [30.0, 55.0], 90.0)
    monthly = base_charge * rng.lognormal(0, 0.15, n)
    usage = rng.gamma(3.0, 8.0 if not weekend else 10.0, n)
    support_calls = rng.poisson(1.2, n)
    last_login = rng.exponential(6.0, n)
    age = rng.normal(42, 13, n).clip(18, 90).round(0)
    if drift:
        # A price change plus a new acquisition channel: charges up, new customers, a new region.
        monthly = monthly * 1.35
        tenure = tenure * 0.4
        last_login = last_login * 2.5
        regions = np.append(regions, "overseas")
        region_p = np.append(region_p * 0.7, 0.3)
        payment = rng.choice(["card", "bank_transfer", "paypal", "voucher"], n, p=[0.2, 0.2, 0.2, 0.4]).astype(object)
    region = rng.choice(regions, n, p=region_p / region_p.sum())
    logit = (
        -1.3
        + 0.9 * (contract == "monthly") - 0.8 * (contract == "two_year")
        - 0.035 * tenure + 0.018 * (monthly - 55) + 0.35 * support_calls
        + 0.06 * last_login - 0.012 * usage + 0.4 * (payment == "voucher")
        + 0.3 * (region == "coastal") - 0.01 * (age - 42)
        # Thresholds and an interaction, as in real churn: two weeks without a login, the first months of a
        # contract, repeated support calls on a monthly plan. A linear model cannot draw them; trees can.
        + 1.0 * (last_login > 14) + 0.8 * (tenure < 6)
        + 0.6 * ((support_calls >= 3) & (contract == "monthly"))
    )
    churned = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    df = pd.DataFrame({
        "event_time": _timestamps(rng, day, n),
        "customer_id": [f"C{day:%y%m%d}{i:05d}" for i in range(n)],
        "tenure_months": tenure,
        "monthly_charges": monthly.round(2),
        "total_charges": (monthly * np.maximum(tenure, 1)).round(2),
        "usage_gb": usage.round(3),
        "support_calls": support_calls.astype(np.int64),
        "days_since_last_login": last_login.round(2),
        "age": age,
        "plan": plan,
        "contract": contract,
        "payment_method": payment,
        "region": region,
        "churned": churned,
    })
    # Real data has holes: ~3% missing charges history, ~2% missing payment method, ~5% missing age.
    df.loc[rng.random(n) < 0.03, "total_charges"] = np.nan
    df.loc[rng.random(n) < 0.02, "payment_method"] = None
    df.loc[rng.random(n) < 0.05, "age"] = np.nan
    return df


def delivery_time(day: dt.date, rows: int = 900, drift: bool = False) -> pd.DataFrame:
    """Food-delivery duration in minutes: rush hours, weather, traffic, restaurant type."""
    rng = _rng("delivery_time", day, drift)
    weekend = day.weekday() >= 5
    n = int(rows * (1.3 if weekend else 1.0) * rng.uniform(0.9, 1.1))
    ts = _timestamps(rng, day, n)
    hour = ts.dt.hour.to_numpy()
    # Seasonal weather: more rain in the winter months.
    rain_p = 0.15 + 0.15 * np.cos(2 * np.pi * (day.timetuple().tm_yday - 15) / 365)
    weather = rng.choice(["clear", "rain", "snow", "fog"], n, p=[1 - rain_p - 0.05, rain_p, 0.02, 0.03])
    restaurant = rng.choice(["fast_food", "pizza", "asian", "fine_dining", "bakery"], n, p=[0.35, 0.25, 0.2, 0.1, 0.1])
    vehicle = rng.choice(["bike", "scooter", "car"], n, p=[0.3, 0.45, 0.25]).astype(object)
    distance = rng.gamma(2.2, 1.6, n)
    items = rng.poisson(2.5, n) + 1
    rush = ((hour >= 11) & (hour <= 13)) | ((hour >= 18) & (hour <= 20))
    courier_rating = rng.normal(4.6, 0.25, n).clip(3, 5)
    if drift:
        distance = distance * 1.6
        vehicle = rng.choice(["bike", "scooter", "car"], n, p=[0.7, 0.2, 0.1]).astype(object)
    speed = np.select([vehicle == "bike", vehicle == "scooter"], [14.0, 22.0], 26.0)
    prep = np.select([restaurant == "fast_food", restaurant == "pizza", restaurant == "fine_dining"], [6.0, 14.0, 25.0], 10.0)
    minutes = (
        prep + 60 * distance / speed + 1.2 * items + 7 * rush + 4 * weekend
        + np.select([weather == "rain", weather == "snow", weather == "fog"], [6.0, 14.0, 4.0], 0.0)
        - 3 * (courier_rating - 4.6) + rng.normal(0, 3.5, n)
    ).clip(5, None)
    df = pd.DataFrame({
        "created_at": ts,
        "distance_km": distance.round(3),
        "items": items.astype(np.int64),
        "hour": hour.astype(np.int64),
        "courier_rating": courier_rating.round(2),
        "weather": weather,
        "restaurant_type": restaurant,
        "vehicle": vehicle,
        "delivery_minutes": minutes.round(2),
    })
    df.loc[rng.random(n) < 0.04, "courier_rating"] = np.nan
    df.loc[rng.random(n) < 0.01, "vehicle"] = None
    return df


GENERATORS: dict[str, Callable[..., pd.DataFrame]] = {
    "customer_churn": customer_churn,
    "delivery_time": delivery_time,
}


def write_frame_atomic(df: pd.DataFrame, path: Path, fmt: str) -> None:
    """Write a frame so that a reader never sees a half-written file."""
    with atomic_path(path) as tmp:
        if fmt == "parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)


def write_example_days(generator: str, directory: str | Path, days: list[dt.date], file_pattern: str = "{date}.parquet",
                       drift: bool = False, overwrite: bool = False, rows: int | None = None,
                       allowed_root: str | Path | None = None) -> list[Path]:
    """Write generated daily files; existing files are kept unless ``overwrite``.

    Every file lands inside ``directory`` and, when given, inside ``allowed_root`` (the CLI passes
    MLPLATFORM_HOME); a pattern or symlink that would leave them raises ValueError before anything is written.
    """
    if generator not in GENERATORS:
        raise ValueError(f"unknown example generator {generator!r}; known: {sorted(GENERATORS)}")
    fn = GENERATORS[generator]
    fmt = "csv" if file_pattern.endswith(".csv") else "parquet"
    target = Path(directory).resolve()
    roots = [target] if allowed_root is None else [Path(allowed_root).resolve(), target]
    paths = {}
    for day in days:
        path = (target / file_pattern.format(date=day.isoformat())).resolve()
        outside = next((root for root in roots if not path.is_relative_to(root)), None)
        if outside is not None:
            raise ValueError(f"refusing to write example data to {path}: it is outside {outside}")
        paths[day] = path
    written = []
    for day, path in paths.items():
        if path.exists() and not overwrite:
            continue
        kwargs = {"drift": drift} if rows is None else {"drift": drift, "rows": rows}
        write_frame_atomic(fn(day, **kwargs), path, fmt)
        written.append(path)
    return written
