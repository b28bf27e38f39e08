"""Forecasting: the next `horizon` values of each series from a `lookback` window.

Time is split, not items: the last `horizon` steps of each series are test and the folds are
rolling-origin validation windows before it. One training rule (`trains_on`) says which
steps, and so which windows, a fold may learn from; the split's leakage proof, the trainer
and the final step all use it. Scores are MASE against the seasonal-naive forecast, sMAPE and
MAE; MASE as the M4 defines it (each window's error over the seasonal-naive MAE of its
series' history), averaged over windows (one a series at test); the bootstrap resamples
whole windows of series (runs of overlapping ones together), or with too few of them moving
blocks of forecast steps (`resampling_blocks`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from dlworkflow.errors import ConfigError
from dlworkflow.pages import counted
from dlworkflow.tasks.base import Blocks, Task, metric_entry, save_csv, scored
from dlworkflow.tasks.regression import PredictsValues

HELD_OUT = "windows whose targets all lie in the test period"

#: the fewest observed steps before a series' first validation window (two make MASE's
#: naive scale; a window with a shorter past than the lookback is padded with its first value)
MIN_HISTORY = 2

#: the most windows a shard holds (whole series: one longer series fills a shard alone); at
#: a lookback of 168 and a horizon of 48, about 28 MB of float32 windows
WINDOWS_PER_SHARD = 32_768


def resolved_lookback(value: Any, horizon: int, season: int,
                      frequency: str | None = None) -> tuple[int, str]:
    """`tensors.timeseries.lookback` as a number, with why: `auto` reads two horizons, and
    at least two seasons (N-BEATS' shortest input of 2H; the M4 horizons make that two to
    four seasons at every frequency: 12 years, 16 quarters, 36 months, 96 hours); hourly
    data also sees a whole week (168 hours: the weekly cycle of anything people drive, which
    two days cannot show; on the M4 Hourly validation windows a week's input took the
    network's MASE from 0.95 to 0.87)."""
    if value not in (None, "auto"):
        return int(value), "tensors.timeseries.lookback"
    lookback = max(2 * int(horizon), 2 * int(season), 1)
    why = f"auto: two horizons ({2 * int(horizon)}) and at least two seasons ({2 * int(season)})"
    if hourly(frequency) and lookback < HOURS_A_WEEK:
        lookback, why = HOURS_A_WEEK, why + f", and a week of hourly data ({HOURS_A_WEEK})"
    return lookback, why


#: hourly data's lookback covers a week at least (`resolved_lookback`)
HOURS_A_WEEK = 168


def hourly(frequency: str | None) -> bool:
    """Whether a pandas frequency alias ('H', 'h', '1h', 'H-...') is one hour."""
    return (frequency or "").split("-")[0] in ("H", "h", "1H", "1h")


def window_lookback(choice: Mapping[str, Any], settings: Mapping[str, Any]) -> int:
    """The lookback the dataset's windows use: the one resolved with the metric choice
    (`intake/metric.json`), else the setting resolved again."""
    if choice.get("lookback"):
        return int(choice["lookback"])
    return resolved_lookback(settings.get("lookback"), int(choice.get("horizon") or 1),
                             int(choice.get("season") or 1), choice.get("frequency"))[0]


def trains_on(last_step: Any, validation_start: Any, gap: int) -> Any:
    """The one training rule: a step (or a window ending at `last_step`) may train the fold
    whose validation starts at `validation_start` when it ends more than `gap` steps before."""
    return last_step < validation_start - gap


def gap_words(gap: int) -> str:
    """`trains_on`'s rule for the report: what a fold trains on, given `split.gap`."""
    if gap <= 0:
        return "steps before its window"
    return f"steps that leave a gap of {counted(gap, 'step')} before its window"


def split_time(series: Mapping[str, pd.DataFrame], settings: Mapping[str, Any],
               key: str = "split") -> pd.DataFrame:
    """Rolling-origin split of each series: one row per time step with role and fold.

    `series` maps a series id to a frame with a `timestamp` column (sorted). The test set is
    the last `horizon` steps (or every step from `test_start`). The folds are consecutive
    windows of `horizon` steps before it, the last ending where the test starts in every
    series; fold k trains on the steps that leave a gap of `gap` steps before its window. A series has
    as many as it allows (each needs MIN_HISTORY observed steps before it), and the dataset
    has `folds` of them, or fewer where its series are short: as many as leave the median
    series a horizon of training steps before its first window (two at least: a mean and a
    spread), so the first fold has windows to train on.
    """
    horizon = int(settings["horizon"])
    starts = {name: test_start(frame["timestamp"].reset_index(drop=True), settings)
              for name, frame in series.items()}
    n_folds = folds_for(starts.values(), settings)
    frames = []
    for series_id, frame in sorted(series.items()):
        n = len(frame)
        stamps = frame["timestamp"].reset_index(drop=True)
        test_from = starts[series_id]
        # a window needs MIN_HISTORY observed steps before it (its inputs and its MASE
        # scale), not a horizon of its own training: one network learns from every series
        allowed = min(n_folds, (test_from - MIN_HISTORY) // horizon)
        if allowed < 1:
            raise ConfigError(
                f"{key}: series {series_id!r} has {test_from} steps before its test window: "
                f"too few for one validation window of {horizon} with {MIN_HISTORY} steps "
                "before it (intake sets such series aside: rerun intake)")
        role = np.where(np.arange(n) >= test_from, "test", "trainval")
        fold = pd.array([pd.NA] * n, dtype="Int64")
        for k in range(n_folds - allowed, n_folds):
            start = test_from - (n_folds - k) * horizon
            fold[start: start + horizon] = k
        frames.append(pd.DataFrame({
            "id": pd.Series([series_id] * n, dtype="string"), "step": np.arange(n),
            "timestamp": stamps.astype("string"), "role": pd.Series(role, dtype="string"),
            "fold": fold, "in_sample": role == "trainval"}))
    return pd.concat(frames, ignore_index=True)


def folds_for(test_starts: Any, settings: Mapping[str, Any]) -> int:
    """The dataset's number of folds: `folds`, or fewer (two at least) where the median
    series, given a horizon of training and MIN_HISTORY steps before its first validation
    window, allows fewer; never more than the longest series allows (fold 0 is somebody's)."""
    horizon, wanted = int(settings["horizon"]), int(settings["folds"])
    before = np.asarray(list(test_starts), dtype=int) - MIN_HISTORY
    if not len(before):
        return wanted
    typical = int(np.median(before - horizon) // horizon)
    return max(1, min(wanted, max(2, typical), int(before.max() // horizon)))


def test_start(stamps: pd.Series, settings: Mapping[str, Any]) -> int:
    """Where a series' test window starts: `horizon` steps before its end, or at the first
    timestamp from `test_start`."""
    if settings.get("test_start"):
        return int(np.searchsorted(pd.to_datetime(stamps).to_numpy(),
                                   np.datetime64(pd.Timestamp(settings["test_start"]))))
    return len(stamps) - int(settings["horizon"])


def needed_length(settings: Mapping[str, Any]) -> int:
    """The fewest steps a series needs: one validation window and the test window after it,
    and MIN_HISTORY observed steps before them (a shorter past than the lookback is padded;
    the series' own training windows may be none: the network is global)."""
    return 2 * int(settings["horizon"]) + MIN_HISTORY


def training_steps(splits: pd.DataFrame, series_id: str, fold: int, gap: int) -> np.ndarray:
    """The steps fold `fold` of a series trains on (`trains_on` its validation start)."""
    rows = splits[(splits["id"] == series_id) & (splits["role"] == "trainval")]
    val_start = int(rows.loc[rows["fold"] == fold, "step"].min())
    return rows.loc[trains_on(rows["step"], val_start, gap), "step"].to_numpy()


def time_windows(splits: pd.DataFrame, gap: int) -> list[dict[str, Any]]:
    """Per series and fold: training end, validation window, and the proof that they are ordered.

    `ordered` holds when the last training step (from `training_steps`) is more than `gap`
    steps before the first validation step and no validation or test step is trained on.
    """
    windows = []
    for (series_id, fold), rows in splits.dropna(subset=["fold"]).groupby(["id", "fold"]):
        series = splits[splits["id"] == series_id]
        train = training_steps(splits, str(series_id), int(fold), gap)
        val_start, val_end = int(rows["step"].min()), int(rows["step"].max())
        train_end = int(train.max()) if len(train) else -1
        held_out = set(rows["step"]) | set(series.loc[series["role"] == "test", "step"])
        stamp = series.set_index("step")["timestamp"]
        windows.append({
            "series": str(series_id), "fold": int(fold), "train_steps": len(train),
            "train_end_step": train_end, "val_start_step": val_start, "val_end_step": val_end,
            "train_end": str(stamp.get(train_end, "")), "val_start": str(stamp[val_start]),
            "val_end": str(stamp[val_end]),
            # a short series may train a fold with none of its own steps (the network is
            # global): ordered then holds trivially
            "ordered": bool(train_end + gap < val_start
                            and not held_out.intersection(train.tolist())),
        })
    return windows


def plan_windows(splits: pd.DataFrame, lookback: int, horizon: int, shard_size: int) -> pd.DataFrame:
    """One row per window (lookback inputs -> horizon targets) with role, fold and shard
    (`shard_size` series a shard, each with all its windows of that role).

    A window whose targets touch the test period is test. A window whose targets lie inside
    fold k's validation window validates fold k; which windows fold k trains on is the
    training rule's (`ForecastingTask.training_rows`). Windows start a lookback into the
    series, or, in a series too short for a whole window before its first validation window,
    MIN_HISTORY steps in: every validation and test window exists and short series train
    too, their short pasts padded when the shard is cut.
    """
    rows = []
    for series_id, steps in splits.groupby("id", sort=True):
        steps = steps.sort_values("step")
        roles, folds = steps["role"].to_numpy(), steps["fold"].to_numpy()
        n = len(steps)
        scored = steps.loc[steps["fold"].notna() | (steps["role"] == "test"), "step"]
        first_scored = int(scored.min()) if len(scored) else n
        # a series with a whole training window before its first validation window starts
        # a lookback in; a shorter one at MIN_HISTORY, its early windows padded
        first = lookback if first_scored >= lookback + horizon else min(MIN_HISTORY, lookback)
        for start in range(max(first, 1), n - horizon + 1):
            target = slice(start, start + horizon)
            role = "test" if (roles[target] == "test").any() else "trainval"
            target_folds = pd.Series(folds[target])
            same_fold = target_folds.notna().all() and target_folds.nunique() == 1
            fold = int(target_folds.iloc[0]) if role == "trainval" and same_fold else pd.NA
            rows.append({"id": f"{series_id}@{start:06d}", "series": str(series_id),
                         "target_start": start, "target_end": start + horizon - 1,
                         "role": role, "fold": fold})
    plan = pd.DataFrame(rows)
    plan["fold"] = plan["fold"].astype("Int64")
    plan["in_sample"] = plan["role"] == "trainval"
    plan["shard"] = [f"{role}-{number:05d}" for role, number in
                     zip(plan["role"], plan["series"].map(series_shards(plan, shard_size)),
                         strict=True)]
    return plan


def series_shards(plan: pd.DataFrame, shard_size: int) -> dict[str, int]:
    """Each series' shard number: shards hold whole series, in name order, at most
    `shard_size` series and WINDOWS_PER_SHARD windows each (a series with more windows gets a
    shard of its own). A shard job reads only its series, the number of jobs follows the
    data's size, not its number of windows (the M4's 414 hourly series made 608 jobs of 512
    windows), and a shard's bytes are bounded whatever the number of series, so every step
    that holds a shard at a time holds the same memory for 400 series or 40,000."""
    counts = plan.groupby("series", sort=True).size()
    numbers, number, series, windows = {}, 0, 0, 0
    for name, count in counts.items():
        if series and (series == shard_size or windows + count > WINDOWS_PER_SHARD):
            number, series, windows = number + 1, 0, 0
        numbers[str(name)] = number
        series, windows = series + 1, windows + int(count)
    return numbers


def naive_scales(history: np.ndarray, season: int) -> np.ndarray:
    """MASE's seasonal-naive scale of each window's lookback."""
    from dlworkflow.metrics import naive_scale

    return np.asarray([naive_scale(row, season) for row in np.asarray(history, dtype=float)])


def window_scales(arrays: Mapping[str, Any], choice: Mapping[str, Any]) -> np.ndarray:
    """Each window's MASE scale: the M4's, stored in the shards (the seasonal-naive MAE of
    the series' whole history before the window); shards made before it was stored fall
    back to the window's lookback."""
    if arrays.get("scale") is not None:
        return np.asarray(arrays["scale"], dtype=float)
    return naive_scales(arrays["x"][:, :, 0], int(choice.get("season", 1)))


#: the fewest independent groups of test windows the bootstrap resamples as wholes; with
#: fewer it resamples moving blocks of forecast steps
MIN_GROUPS = 5


def resampling_blocks(ids: Sequence[str], horizon: int) -> Blocks:
    """What the test's bootstrap resamples, for rows in (window, step) order.

    The forecast errors of one window are correlated over its steps (a level missed at step
    1 is missed at step 52 too), and overlapping windows of one series share their targets:
    resampled as independent (window, step) pairs they gave intervals 2.8 (M4 Weekly) and
    3.9 (M4 Hourly) times narrower than resampling whole windows, and 27 times on a test
    period of 314 rolling windows of one series. So the windows of each series are cut, in time
    order, into runs of at most `horizon` (a run's windows overlap; one window a series at
    the default split), and with at least MIN_GROUPS runs the bootstrap resamples runs
    (a cluster bootstrap). With fewer (one series' last horizon) it resamples circular
    blocks of ceil(T ** (1/3)) consecutive target steps, each within one run, T the target
    steps of all runs (Politis and Romano's circular block bootstrap; the block length of
    order T^(1/3) after Hall, Horowitz and Jing 1995), the rows of one target step
    together."""
    runs: dict[str, list[tuple[int, int]]] = {}
    for number, window in enumerate(ids):
        name, _, start = str(window).rpartition("@")
        try:
            origin = int(start)
        except ValueError:  # not a window of the shards' naming: a series of its own
            name, origin = str(window), 0
        runs.setdefault(name, []).append((origin, number))
    groups: list[list[tuple[int, int]]] = []
    for windows in runs.values():
        windows.sort()
        groups.extend(windows[i: i + horizon] for i in range(0, len(windows), horizon))
    # the rows of each group: a window's `horizon` steps follow one another
    rows = [np.concatenate([np.arange(n * horizon, (n + 1) * horizon) for _, n in group])
            for group in groups]
    if len(groups) >= MIN_GROUPS:
        single = all(len(group) == 1 for group in groups) and len(groups) == len(runs)
        return Blocks(rows, len(rows), "held-out windows, one a series" if single else
                      f"runs of up to {horizon} overlapping held-out windows of a series")
    timelines = []
    for group, held in zip(groups, rows, strict=True):
        # each row's target step on the run's timeline
        times = np.concatenate([origin - group[0][0] + np.arange(horizon) for origin, _ in group])
        timelines.append([at for t in range(int(times.max()) + 1)
                          if len(at := held[times == t])])
    steps = sum(len(timeline) for timeline in timelines)
    length = math.ceil(steps ** (1 / 3))
    blocks = [np.concatenate([at[(first + k) % len(at)] for k in range(min(length, len(at)))])
              for at in timelines for first in range(len(at))]
    return Blocks(blocks, math.ceil(steps / length),
                  f"circular blocks of {length} consecutive forecast steps ({len(groups)} "
                  f"series window{'s' if len(groups) > 1 else ''}, too few to resample whole)")


def forecast_scores(choice: Mapping[str, Any], errors: pd.DataFrame) -> dict[str, float]:
    """Forecast metrics over (window, step) pairs; MASE as the mean of |error| / the window's
    seasonal-naive scale (equal to the mean of per-window MASE when windows are whole)."""
    from dlworkflow.metrics import compute, metric_names

    out = {}
    for name in metric_names(choice):
        if name == "mase":
            out[name] = float(np.mean(np.abs(errors["y_true"] - errors["y_pred"])
                                      / errors["scale"]))
        else:
            out[name] = compute(name, errors["y_true"].to_numpy(), errors["y_pred"].to_numpy(),
                                season=int(choice.get("season", 1)))
    return out


def window_histories(arrays: Mapping[str, Any]) -> list[np.ndarray] | None:
    """Each window's target history before its first target (views of the series the shards
    store once; gaps interpolated when used), or None for shards without them."""
    series = arrays.get("series")
    if not series:
        return None
    out = []
    for window in arrays["ids"]:
        name, _, start = str(window).rpartition("@")
        out.append(series[name][: int(start)])
    return out


def series_mase(frame: pd.DataFrame, test: Mapping[str, Any],
                choice: Mapping[str, Any]) -> pd.Series:
    """Each held-out window's MASE (one window a series at test) from a model's prediction
    rows, over the window's stored scale; sorted best first."""
    scales = pd.Series(window_scales(test, choice), index=list(test["ids"]))
    error = (frame["y_true"] - frame["y_pred"]).abs().groupby(frame["id"]).mean()
    return (error / scales.reindex(error.index)).sort_values(kind="stable")


class ForecastingTask(PredictsValues, Task):
    """Forecast the next `split.horizon` steps of every series."""

    name = "forecasting"
    labelled = False
    estimator_kind = "forecaster"
    shard_unit = "windows"
    split_rows = "steps"
    test_rows = "windows"
    bootstrap_unit = "held-out windows"  # resampling_blocks says which, per test
    samples_items = False
    reads_rows_on_demand = True
    layout_kinds = ("long_csv", "wide_csv", "tsf")
    dvc_plots: ClassVar[dict[str, dict[str, Any]]] = {
        "Forecast vs actual, held-out horizon ({dataset})": {
            "x": "step", "y": {"results/{dataset}/final/plots/forecast.csv": ["actual",
                                                                             "forecast"]}},
    }

    # --- intake ----------------------------------------------------------------------
    def set_aside(self, inventory: pd.DataFrame,
                  settings: Mapping[str, Any] | None) -> tuple[pd.DataFrame, list[Any]]:
        """A series too short for its test window, one validation window and MIN_HISTORY
        steps before them is set aside, with the lengths in its reason; the others run."""
        from dlworkflow.items import Rejection

        if not settings or inventory.empty or settings.get("test_start"):
            # with a test date, what lies before it is only known from the timestamps: the
            # split names a series too short for it
            return inventory, []
        needed = needed_length(settings)
        lengths = inventory["length"].astype(int)
        short = lengths < needed
        horizon = int(settings["horizon"])
        rejections = [Rejection(
            path=str(row.path), id=str(row.id), step="task", code="series_too_short",
            reason=(f"{count} steps; forecasting it needs {needed}: a test window and one "
                    f"validation window of {horizon} each (split.horizon), and {MIN_HISTORY} "
                    "observed steps before them"))
            for row, count in zip(inventory[short].itertuples(), lengths[short], strict=True)]
        return inventory[~short].reset_index(drop=True), rejections

    # --- the metric ------------------------------------------------------------------
    def metric_inputs(self, inventory: pd.DataFrame) -> tuple[pd.Series | None, str | None]:
        frequency = None
        known = inventory["frequency"].dropna().astype(str) if "frequency" in inventory else []
        if len(known):  # series without timestamps or a stated frequency have none
            frequency = known.mode().iloc[0]
        return None, frequency

    def metric_choice(self, labels: pd.Series | None, settings: Mapping[str, Any],
                      frequency: str | None) -> tuple[dict[str, Any], dict, list[dict], str]:
        from dlworkflow.metrics import season_length

        season = season_length(frequency)
        primary = metric_entry("mase", season=season)
        why = (f"Forecasting at frequency {frequency or 'unknown'}: MASE scales the error by "
               f"the seasonal-naive forecast (season {season}), so below 1 beats repeating last "
               "season and scores compare across series; sMAPE is reported as a percentage.")
        facts: dict[str, Any] = {"frequency": frequency, "season": season}
        task = settings.get("task") or {}
        if task.get("horizon"):
            # the windows' lookback is decided here, with the season it may depend on
            facts["horizon"] = int(task["horizon"])
            facts["lookback"], facts["lookback_rule"] = resolved_lookback(
                task.get("lookback"), int(task["horizon"]), season, frequency)
        return (facts, primary, [metric_entry("smape"), metric_entry("mae")], why)

    # --- the split -------------------------------------------------------------------
    def split(self, inventory: pd.DataFrame, series: Callable[[], Mapping[str, pd.DataFrame]],
              settings: Mapping[str, Any], seed: int, sample: int | None,
              key: str) -> pd.DataFrame:
        return split_time(series(), settings, key)

    def leakage_report(self, splits: pd.DataFrame, settings: Mapping[str, Any]) -> dict[str, Any]:
        windows = time_windows(splits, settings.get("gap", 0))
        test_after = all(
            splits[(splits["id"] == s) & (splits["role"] == "test")]["step"].min()
            > splits[(splits["id"] == s) & (splits["role"] == "trainval")]["step"].max()
            for s in splits["id"].unique())
        problems = sum(not w["ordered"] for w in windows) + (not test_after)
        folds = int(splits["fold"].dropna().nunique())
        return {"task": self.name, "gap": settings.get("gap", 0), "folds": folds,
                "windows": windows,
                "test_after_trainval": bool(test_after), "leaks": int(problems)}

    def describe_scheme(self, settings: Mapping[str, Any], has_groups: bool) -> str:
        gap = int(settings.get("gap", 0))
        test = (f"every step from {settings['test_start']}" if settings.get("test_start")
                else f"the last {settings['horizon']} steps")
        return (f"Test: {test} of each series. Validation: up to {settings['folds']} "
                f"rolling-origin windows of {settings['horizon']} steps before the test set (as "
                "many as each series allows, the last ending where its test starts; fewer "
                "folds, two at least, when the median series is too short for a horizon of "
                f"training before its first), each fold training only on {gap_words(gap)}.")

    # --- shards and the rows of a fold -----------------------------------------------
    def plan(self, splits: pd.DataFrame, tensors: Mapping[str, Any], split: Mapping[str, Any],
             seed: int, choice: Mapping[str, Any] | None = None) -> pd.DataFrame:
        lookback = window_lookback(choice or {}, tensors["timeseries"])
        plan = plan_windows(splits, lookback, int(split["horizon"]), int(tensors["shard_size"]))
        if plan.empty:
            raise ConfigError("split.horizon: no window fits; every series is shorter than "
                              "a horizon and one step")
        return plan

    def training_rows(self, trainval: pd.DataFrame, fold: int, gap: int) -> pd.DataFrame:
        """Windows whose targets end before their own series' validation window of the fold
        minus the gap (step numbers restart in every series, so each has its own start); a
        series without a validation window in the fold trains it with none of its windows."""
        starts = trainval.loc[trainval["fold"] == fold].groupby("series")["target_start"].min()
        start = trainval["series"].map(starts)
        return trainval[trains_on(trainval["target_end"], start, gap).fillna(False)
                        .to_numpy(dtype=bool)]

    def held_out(self, test: pd.DataFrame) -> pd.DataFrame:
        """The test windows scored: those whose targets all lie in the test period."""
        first_test = test.groupby("series")["target_end"].transform("min")
        return test[test["target_start"] >= first_test]

    # --- models ----------------------------------------------------------------------
    def baselines(self, modality: Any, settings: Mapping[str, Any], seed: int) -> dict[str, Any]:
        """The statistical benchmarks and ridge on lags, on the windows and their series'
        histories (not the modality's flat rows)."""
        from dlworkflow.estimators import forecasting_baselines

        return forecasting_baselines(settings)

    def baseline_inputs(self, modality: Any, arrays: Mapping[str, Any],
                        flat_settings: Mapping[str, Any]) -> Any:
        """Every forecaster sees the windows, how much of each is observed (the rest is
        padding), the known future, and each window's series history before its targets
        (the statistical methods fit on it, as the M4's benchmarks do)."""
        return {"past": arrays["x"], "future": arrays.get("x_future"),
                "length": arrays.get("x_length"), "history": window_histories(arrays)}

    def prepare_baseline(self, estimator: Any, choice: Mapping[str, Any],
                         rows: Mapping[str, Any]) -> Any:
        from dlworkflow.estimators import SeasonalNaive

        if isinstance(estimator, SeasonalNaive):
            estimator.set_params(season=int(choice.get("season", 1)), horizon=rows["y"].shape[1])
        return estimator

    def network_outputs(self, classes: Sequence[str], y: np.ndarray) -> int:
        return int(y.shape[1])

    def loss(self) -> tuple[Any, list[str]]:
        """Absolute error (weighted by `sample_weights`: MASE's own measure, per window),
        not squared: on the M4 Hourly validation windows the same network scored MASE 0.87
        trained on absolute and 1.12 on squared errors."""
        import keras

        return keras.losses.MeanAbsoluteError(), ["mae"]

    def sample_weights(self, arrays: Mapping[str, Any]) -> np.ndarray:
        """Each window's error on its own scale: weight 1 / its mean absolute change, the
        network's `WindowScaled` spread. Without it the loss of raw values is the loss of
        the largest series (the M4's hourly levels differ 10,000-fold: a network scored MASE
        5.4 where seasonal naive scored 1.4)."""
        from dlworkflow.layers import window_spread

        spread = np.asarray(window_spread(np.asarray(arrays["x"], np.float32)[:, :, :1]))
        return (1.0 / spread[:, 0, 0]).astype(np.float32)

    def target_stats(self, train: Mapping[str, Any] | None,
                     rows: pd.DataFrame) -> tuple[float, float]:
        """Scale of the change from the last input value over the horizon."""
        change = train["y"] - train["x"][:, -1:, 0]
        return 0.0, float(np.std(change) or 1.0)

    def fold_scores(self, choice: Mapping[str, Any], valid: Mapping[str, Any], output: Any,
                    proba: np.ndarray | None, classes: Sequence[str], fold: int,
                    model: str) -> tuple[dict[str, float], pd.DataFrame]:
        """Each window's MASE is scaled by its series' history before it (`window_scales`)."""
        from dlworkflow.metrics import prediction_frame, score

        metrics = score(choice, valid["y"], output, scales=window_scales(valid, choice))
        return metrics, prediction_frame(valid["ids"], fold, model, valid["y"], output)

    # --- the test --------------------------------------------------------------------
    def test_notes(self) -> dict[str, Any]:
        return {"held_out": HELD_OUT}

    def test_references(self, choice: Mapping[str, Any], test: Mapping[str, Any],
                        scored: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """The M4's overall weighted average (OWA) of each scored model: the mean of its
        sMAPE and its MASE, each over Naive2's on the same test windows (below 1 beats
        Naive2, the M4's yardstick; Makridakis et al. 2020)."""
        from dlworkflow.estimators import Naive2
        from dlworkflow.metrics import score

        naive2 = Naive2(season=int(choice.get("season", 1)), horizon=int(test["y"].shape[1]))
        reference = score(choice, np.asarray(test["y"], float),
                          naive2.predict(self.baseline_inputs(None, test, {})),
                          scales=window_scales(test, choice))
        if not reference.get("smape") or not reference.get("mase"):
            return {}
        owa = {kind: 0.5 * (entry["metrics"]["smape"]["value"] / reference["smape"]
                            + entry["metrics"]["mase"]["value"] / reference["mase"])
               for kind, entry in scored.items() if {"smape", "mase"} <= set(entry["metrics"])}
        return {"naive2": {"mase": reference["mase"], "smape": reference["smape"]},
                "owa": owa}

    def evaluate(self, choice: Mapping[str, Any], test: Mapping[str, Any], output: np.ndarray,
                 classes: Sequence[str], threshold: Mapping[str, Any] | None, model: str,
                 bootstrap: Mapping[str, Any]) -> tuple[dict[str, Any], pd.DataFrame]:
        from dlworkflow.metrics import prediction_frame, score

        y_true, y_pred = np.asarray(test["y"], float), np.asarray(output, float)
        scales = window_scales(test, choice)
        point = score(choice, y_true, y_pred, scales=scales)
        frame = prediction_frame(test["ids"], -1, model, y_true, y_pred)
        errors = frame.assign(scale=np.repeat(scales, y_true.shape[1]))

        def metric_fn(picked: np.ndarray) -> Mapping[str, float]:
            return forecast_scores(choice, errors.iloc[picked])

        return scored(model, len(test["ids"]), len(errors), point, metric_fn, bootstrap,
                      resampling_blocks(list(test["ids"]), y_true.shape[1])), frame

    def write_plots(self, folder: Any, frame: pd.DataFrame, classes: Sequence[str],
                    positive: str | None) -> list[str]:
        """The forecast of the first held-out window against the actual values."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        first = frame[frame["id"] == frame["id"].min()]
        save_csv(folder, "forecast.csv", pd.DataFrame({
            "step": first["step"], "actual": first["y_true"], "forecast": first["y_pred"]}))
        return ["forecast.csv"]

    # --- reports ---------------------------------------------------------------------
    def eda_target(self, inventory: pd.DataFrame, series: Callable[[], Mapping[str, Any]],
                   season: int) -> dict[str, Any]:
        from dlworkflow.figures import forecasting_target

        return forecasting_target(series(), season)

    def report_figures(self, mine: pd.DataFrame, predictions: pd.DataFrame,
                       test: Mapping[str, Any], card: Mapping[str, Any],
                       choice: Mapping[str, Any]) -> dict[str, Any]:
        """The shipped model's test MASE per series (its distribution, when there are several)
        and the held-out horizons of its best, median and worst series with every model's
        forecast (one panel for a single series)."""
        from dlworkflow.figures import forecast_panels, mase_distribution

        per_series = series_mase(mine, test, choice)
        ids = list(test["ids"])
        lengths = test.get("x_length")
        picks = [("best", per_series.index[0])]
        if len(per_series) > 1:
            picks += [("median", per_series.index[(len(per_series) - 1) // 2]),
                      ("worst", per_series.index[-1])]
        panels = []
        for label, window in picks:
            row = ids.index(window)
            past = test["x"][row, :, 0]
            if lengths is not None:
                past = past[len(past) - int(lengths[row]):]
            title = (f"{label}: {window.split('@')[0]}, MASE {per_series[window]:.3g}"
                     if len(per_series) > 1 else f"{window.split('@')[0]}, MASE "
                     f"{per_series[window]:.3g}")
            panels.append((title, past, predictions[predictions["id"] == window]))
        figures = [{"title": "held-out horizon of the best, median and worst series",
                    "uri": forecast_panels(panels)}]
        if len(per_series) > 1:
            figures.insert(0, {"title": "test MASE per series",
                               "uri": mase_distribution(per_series.to_numpy(),
                                                        str(mine["model"].iloc[0]))})
        return {"figures": figures, "per_class": []}

    def worst_errors(self, frame: pd.DataFrame, classes: Sequence[str],
                     per_class: int) -> pd.DataFrame | None:
        return None  # windows have no raw item to preview

    def explained_value(self, values: np.ndarray, output: int | None) -> np.ndarray:
        return values.mean(axis=1)

    def explained_what(self, predicted: Any, classes: Sequence[str]) -> str:
        return "mean forecast"
