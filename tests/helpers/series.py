"""Many short series in the field's file formats, made from real data in ../shared/data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tests.conftest import SHARED_DATA

TSF_HEADER = """# Yearly totals of M4 Weekly series (Makridakis et al. 2020): 52-week sums counted back
# from each series' last week; written by the tests in the Monash archive's format
@relation m4_weekly_yearly
@attribute series_name string
@attribute start_timestamp date
@frequency yearly
@horizon 6
@missing false
@equallength false
@data
"""


def yearly_series(count: int, first: int = 0) -> dict[str, np.ndarray]:
    """`count` M4 Weekly series from row `first`, each as the sums of its complete 52-week
    years (lengths 1-49; many under 30, like the M competitions' yearly sets)."""
    table = pd.read_csv(SHARED_DATA / "m4" / "Weekly-train.csv")
    out = {}
    for row in table.iloc[first:first + count].itertuples(index=False):
        values = np.asarray(row[1:], dtype=float)
        values = values[~np.isnan(values)]
        years = len(values) // 52
        out[str(row[0])] = values[len(values) - 52 * years:].reshape(years, 52).sum(axis=1)
    return out


def write_yearly_tsf(path: Path, series: dict[str, np.ndarray], extra: str = "") -> Path:
    """The series as a Monash `.tsf` file (yearly, horizon 6), plus `extra` data lines."""
    lines = [f"{name}:1990-01-01 00-00-00:{','.join(f'{v:.1f}' for v in values)}"
             for name, values in series.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TSF_HEADER + "\n".join(lines) + "\n" + extra)
    return path
