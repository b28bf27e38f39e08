"""Step 7 on real data: the epoch rule, threshold tuning on out-of-fold predictions, bootstrap
intervals, the final retrain on every trainval row and the single scoring of the test rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict

from dlworkflow.context import RunContext
from dlworkflow.data import load_test_arrays
from dlworkflow.errors import ConfigError
from dlworkflow.estimators import SeasonalNaive
from dlworkflow.final import (
    compare_on_test,
    export_baseline,
    final_epochs,
    final_phases,
    score_test,
    train_final,
)
from dlworkflow.metrics import METRICS, score
from dlworkflow.shardfile import save_shard
from dlworkflow.tasks import get_task
from dlworkflow.tasks.base import bootstrap_intervals
from tests.conftest import SHARED_DATA
from tests.helpers.shards import co2_windows, digits_images, sms_texts, write_metric, write_shards

CLASSIFICATION = get_task("classification")


def tune_threshold(frame, choice, classes, setting="tune"):
    return CLASSIFICATION.threshold(lambda: frame, choice, classes, setting)

QUICK = {"min_steps": 0, "patience_steps": 0,
         "epochs": 2, "patience": 1, "filters": 4, "units": 8, "layers": 2, "batch_size": 32,
         "learning_rate": 1e-3, "dropout": 0.1, "l2": 0.0, "deterministic": True}
IMAGE = {"modality": "image", "task": "classification", "layout": {"kind": "folders"}}


def _history(path: Path, rates: list[float]) -> str:
    pd.DataFrame({"loss": np.linspace(1, 0.5, len(rates)), "learning_rate": rates,
                  "epoch": np.arange(1, len(rates) + 1)}).to_csv(path, index=False)
    return str(path)


def test_final_epochs_take_the_median_and_replay_that_folds_learning_rates(tmp_path):
    histories = [_history(tmp_path / f"h{k}.csv", [1e-3] * 4 + [5e-4] * (n - 4))
                 for k, n in enumerate([9, 12, 14])]
    plan = final_epochs([7, 10, 12], histories)
    assert plan["epochs"] == 10 and plan["schedule_from_fold"] == 1
    assert plan["schedule"] == [1e-3] * 4 + [5e-4] * 6
    longer = final_epochs([7, 10, 12], histories, setting=15)
    assert longer["epochs"] == 15 and longer["schedule"][-1] == 5e-4  # last rate holds
    with pytest.raises(ConfigError, match=r"final\.epochs"):
        final_epochs([3], histories, setting=0)
    # folds of one size (k-fold) all count; growing rolling-origin folds: the largest decide
    assert final_epochs([7, 10, 12], histories, train_rows=[400, 401, 400])["epochs"] == 10
    grown = final_epochs([20, 10, 6], histories, train_rows=[772, 1200, 1612])
    assert grown["epochs"] == 6 and grown["schedule_from_fold"] == 2
    assert grown["schedule"] == [1e-3] * 4 + [5e-4] * 2 and "(fold 2)" in grown["rule"]
    two = final_epochs([20, 10, 6], histories, train_rows=[772, 1500, 1612])
    assert two["epochs"] == 8 and "(folds 1, 2)" in two["rule"]


def _phased_history(path: Path, first: list[float], second: list[float], best: tuple[int, int],
                    rates: tuple[float, float]) -> str:
    """A fine-tuned fold's history.csv: len(first) frozen epochs at a cosine from rates[0],
    then len(second) fine-tuning epochs from rates[1], each phase's best epoch (1-based, in
    the phase) the lowest validation loss of that phase."""
    phases = []
    for losses, top, rate in zip((first, second), best, rates, strict=True):
        loss = np.asarray(losses, dtype=float)
        loss[top - 1] = loss.min() - 0.01
        phases.append(pd.DataFrame({"val_loss": loss, "learning_rate": rate * np.cos(
            np.linspace(0, 1.5, len(loss)))}))
    frame = pd.concat(phases, ignore_index=True)
    frame.assign(loss=0.5, epoch=np.arange(1, len(frame) + 1)).to_csv(path, index=False)
    return str(path)


def test_a_fine_tuned_backbones_final_model_plans_each_phase_as_the_folds_ran_it(tmp_path):
    """With `train.fine_tune_layers`, each fold restores its best frozen epoch, then its best
    fine-tuning epoch. The final model replays both phases apart: the frozen phase for the
    median of the folds' best frozen epochs, at the first phase's rates, then the
    fine-tuning phase for the median best fine-tuning epoch, at that phase's rates. Planned
    as one phase (before), the best epoch over both (in the fine-tuning phase) set the
    frozen phase's length, replaying fine-tuning rates on a frozen backbone, and the
    fine-tuning phase held its rate."""
    lengths, bests = [(19, 8), (16, 8), (19, 6)], [(14, 7), (12, 5), (17, 4)]
    histories = [_phased_history(tmp_path / f"h{k}.csv", list(np.linspace(1, 0.5, a)),
                                 list(np.linspace(0.4, 0.3, b)), best, (1e-3, 1e-4))
                 for k, ((a, b), best) in enumerate(zip(lengths, bests, strict=True))]
    overall = [a + b for (a, _), (_, b) in zip(lengths, bests, strict=True)]  # 26, 21, 23
    first, second = final_phases(overall, histories, "auto", None, [a for a, _ in lengths])
    frames = [pd.read_csv(path) for path in histories]
    assert first["epochs"] == 14 and first["schedule_from_fold"] == 0  # not 23 (one phase)
    assert first["schedule"] == frames[0]["learning_rate"][:14].tolist()
    assert second["epochs"] == 5 and second["schedule_from_fold"] == 1
    assert second["schedule"] == frames[1]["learning_rate"][16:21].tolist()
    assert max(second["schedule"]) <= 1e-4 < min(first["schedule"][:10])
    assert final_phases(overall, histories, 12, None, [19, 16, 19])[0]["epochs"] == 12
    # folds that did not fine-tune: one phase, planned as before
    alone, none = final_phases([14, 12, 17], histories, "auto", None, [None] * 3)
    assert none is None and alone == final_epochs([14, 12, 17], histories)


@pytest.mark.seconds(20)
def test_a_fine_tuned_final_model_trains_each_phase_for_its_planned_epochs(tmp_path):
    """train_final on real digits with a transfer network whose backbone (self-made weights,
    as no ImageNet weights are reachable here) the folds fine-tuned: the final history holds
    the frozen phase's epochs, then the fine-tuning phase's, each at its replayed rates."""
    from dlworkflow.models.extractors import build_extractor

    backbone = build_extractor("mobilenet_v3_small", (32, 32, 3), "none")
    weights = tmp_path / "backbone.weights.h5"
    backbone.save_weights(weights)
    x, labels, folds = digits_images(150)
    folder = write_shards(tmp_path / "tensors", x, labels, folds)
    metric = write_metric(folder, "classification", labels)
    nn = tmp_path / "nn"
    nn.mkdir()
    lengths, bests = [(3, 2), (3, 2), (2, 2)], [(2, 1), (3, 2), (2, 2)]
    histories = [_phased_history(nn / f"history-{k}.csv", [1.0] * a, [0.5] * b, best,
                                 (1e-3, 2e-5))
                 for k, ((a, b), best) in enumerate(zip(lengths, bests, strict=True))]
    details = {str(k): {"train_rows": 120, "fine_tune_from": a}
               for k, (a, _) in enumerate(lengths)}
    (nn / "summary.json").write_text(json.dumps({
        "best_epochs": [4, 5, 4], "fold_details": {"image_transfer": details},
        **_summary("image_transfer", 0.95)}))
    pd.DataFrame({"id": ["a"], "y_true": ["1"]}).to_parquet(nn / "oof.parquet")
    _baseline_summary(tmp_path, "logreg", 0.9)
    train = {**QUICK, "architecture": "image_transfer", "fine_tune_layers": 3,
             "fine_tune_epochs": 2, "fine_tune_learning_rate": 2e-5,
             "transfer": {"backbone": "mobilenet_v3_small", "weights": str(weights)}}
    out = tmp_path / "final"
    card = train_final(_final_context(IMAGE, folder, nn, metric, histories, out, seed=7,
                                      sections={"train": train, "final": {"epochs": "auto"}}))
    plan = card["training"]["epochs"]
    assert plan["epochs"] == 2 and plan["fine_tune"]["epochs"] == 2
    history = pd.read_csv(out / "history.csv")
    expected = pd.read_csv(histories[0])["learning_rate"][:2].tolist() + \
        pd.read_csv(histories[1])["learning_rate"][3:5].tolist()
    assert len(history) == 4
    np.testing.assert_allclose(history["learning_rate"], expected, rtol=1e-5)


@pytest.mark.seconds(15)
@pytest.mark.parametrize("fold_slices", [1, 10, None])
def test_the_final_models_epochs_are_the_share_of_a_pass_the_folds_were(tmp_path, fold_slices):
    """A final epoch is as much of a pass as the replayed fold's was. Real digits, 160
    trainval rows: a pass of 5 batches of 32, and `max_steps: 4` below it, which alone would
    cut the final's pass into 5 epochs of 1 step. Folds that trained whole passes make the
    final train whole passes (it trained a fifth of its rows per replayed epoch); folds that
    cut theirs in ten make it cut its own in ten; a summary written before folds recorded
    it keeps the `max_steps` rule."""
    x, labels, folds = digits_images(160)
    folder = write_shards(tmp_path / "tensors", x, labels, folds)
    metric = write_metric(folder, "classification", labels)
    nn = tmp_path / "nn"
    nn.mkdir()
    histories = [_history(nn / f"history-{k}.csv", [1e-3, 5e-4]) for k in range(3)]
    extra = {} if fold_slices is None else {"pass_slices": fold_slices}
    details = {str(k): {"train_rows": 128, **extra} for k in range(3)}
    (nn / "summary.json").write_text(json.dumps({
        "best_epochs": [2, 2, 2], "fold_details": {"image_cnn": details},
        **_summary("image_cnn", 0.95)}))
    pd.DataFrame({"id": ["a"], "y_true": ["1"]}).to_parquet(nn / "oof.parquet")
    _baseline_summary(tmp_path, "logreg", 0.9)
    train = {**QUICK, "architecture": "image_cnn", "max_steps": 4}
    card = train_final(_final_context(IMAGE, folder, nn, metric, histories, tmp_path / "final",
                                      seed=7, sections={"train": train,
                                                        "final": {"epochs": "auto"}}))
    plan = card["training"]["epochs"]
    assert card["training"]["train_rows"] == 160 and plan["epochs"] == 2
    assert (plan["pass_slices"], plan["steps_per_epoch"]) == {1: (1, 5), 10: (10, 1),
                                                              None: (5, 1)}[fold_slices]


@pytest.fixture(scope="module")
def sms_oof():
    """Out-of-fold spam probabilities of a TF-IDF logistic regression on real SMS."""
    texts, labels, folds = sms_texts(1500)
    model = LogisticRegression(C=1.0, max_iter=1000)
    features = TfidfVectorizer().fit_transform(texts)
    proba = cross_val_predict(model, features, labels, groups=folds, cv=5,
                              method="predict_proba")
    frame = pd.DataFrame({"id": [f"m{i}" for i in range(len(texts))], "y_true": labels,
                          "p_ham": proba[:, 0], "p_spam": proba[:, 1]})
    choice = json.loads(Path(write_metric(Path(__import__("tempfile").mkdtemp()),
                                          "classification", labels)).read_text())
    return frame, choice


def test_threshold_tuned_on_oof_predictions_raises_the_primary_metric(sms_oof):
    frame, choice = sms_oof
    assert choice["primary"]["name"] == "f_beta" and choice["positive_label"] == "spam"
    tuned = tune_threshold(frame, choice, ("ham", "spam"))
    assert tuned["positive"] == "spam" and 0.05 <= tuned["threshold"] <= 0.95
    # an under-confident model (C=1 on few spam rows) gains from a threshold below 0.5
    assert tuned["threshold"] < 0.5
    assert tuned["oof_f_beta_at_threshold"] > tuned["oof_f_beta_at_0.5"]
    y_pred = CLASSIFICATION.decide(frame[["p_ham", "p_spam"]].to_numpy(), ("ham", "spam"), tuned)
    assert score(choice, frame["y_true"].to_numpy(), y_pred)["f_beta"] == pytest.approx(
        tuned["oof_f_beta_at_threshold"])
    fixed = tune_threshold(frame, choice, ("ham", "spam"), setting=0.7)
    assert fixed["threshold"] == 0.7
    assert tune_threshold(frame, choice, ("ham", "spam"), setting="none") is None
    assert tune_threshold(frame, choice, ("a", "b", "c")) is None  # not binary
    with pytest.raises(ConfigError, match=r"final\.threshold"):
        tune_threshold(frame, choice, ("ham", "spam"), setting=1.5)


@pytest.mark.parametrize("intake", [{"ranking": True}, {"metric": "pr_auc"}])
def test_a_primary_from_scores_keeps_the_threshold_and_records_a_label_metric(sms_oof, intake):
    """With ROC AUC (intake.ranking) or PR AUC primary, no threshold changes it: `tune`
    keeps 0.5, a number is kept as given, and the record scores the first chosen metric from
    labels there (the final step raised KeyError on these params)."""
    from dlworkflow.choice import choose_metric

    frame, _ = sms_oof
    choice = choose_metric("classification", frame["y_true"],
                           {"imbalance_share": 0.2, "beta": 1.0, **intake})
    assert METRICS[choice["primary"]["name"]].needs == "scores"
    judged = next(m["name"] for m in choice["secondary"] if METRICS[m["name"]].needs == "labels")
    tuned = tune_threshold(frame, choice, ("ham", "spam"))
    assert tuned["threshold"] == 0.5 and "not tuned" in tuned["how"]
    fixed = tune_threshold(frame, choice, ("ham", "spam"), setting=0.3)
    y_pred = CLASSIFICATION.decide(frame[["p_ham", "p_spam"]].to_numpy(), ("ham", "spam"), fixed)
    assert fixed["threshold"] == 0.3 and fixed[f"oof_{judged}_at_threshold"] == pytest.approx(
        score(choice, frame["y_true"].to_numpy(), y_pred)[judged])
    assert fixed[f"oof_{judged}_at_threshold"] != fixed[f"oof_{judged}_at_0.5"]


def test_bootstrap_intervals_hold_the_value_and_narrow_with_more_rows(sms_oof):
    frame, choice = sms_oof
    y_true = frame["y_true"].to_numpy()
    y_pred = np.where(frame["p_spam"] >= 0.3, "spam", "ham")

    def width(rows: int) -> tuple[float, list[float]]:
        picked = slice(0, rows)
        point = score(choice, y_true[picked], y_pred[picked])["f_beta"]
        bounds = bootstrap_intervals(
            lambda i: score(choice, y_true[picked][i], y_pred[picked][i]), rows, 200, 1, 0.95)
        return point, bounds["f_beta"]

    point, (low, high) = width(1500)
    assert low <= point <= high and 0 < high - low < 0.2
    small_point, (small_low, small_high) = width(300)
    assert small_low <= small_point <= small_high
    assert small_high - small_low > 1.5 * (high - low)  # about sqrt(5) wider


def test_the_test_comparison_pairs_the_resamples_and_says_when_the_test_cannot_decide(sms_oof):
    """Two models scored on the same real SMS test rows: the difference's interval comes
    from the same resamples (narrower than the two intervals side by side), and the verdict
    follows it: a clearly worse model is told apart, a near twin is not."""
    frame, choice = sms_oof
    proba = frame[["p_ham", "p_spam"]].to_numpy()
    codes = (frame["y_true"] == "spam").to_numpy().astype(int)
    test = {"ids": frame["id"].to_numpy()[:600], "y": codes[:600]}
    bootstrap = {"resamples": 300, "seed": 3, "confidence": 0.95}
    tuned = {"positive": "spam", "threshold": 0.3}

    def evaluate(output, name):
        return CLASSIFICATION.evaluate(choice, test, output[:600], ("ham", "spam"), tuned, name,
                                       bootstrap)[0]

    noise = np.random.default_rng(0).uniform(0, 1, len(proba))
    blurred = np.column_stack([1 - noise, noise])  # a model that ignores the text
    # a near twin: it disagrees on 10 rows, right on 5 of them and wrong on 5
    right = (proba[:, 1] >= 0.3) == (codes == 1)
    flipped = np.concatenate([np.flatnonzero(right[:600])[:5], np.flatnonzero(~right[:600])[:5]])
    nudged = proba.copy()
    nudged[flipped, 1] = np.where(proba[flipped, 1] >= 0.3, 0.05, 0.9)
    nudged[flipped, 0] = 1 - nudged[flipped, 1]
    scored = {"network": evaluate(proba, "logreg"), "baseline": evaluate(blurred, "coin")}
    clear = compare_on_test("f_beta", True, "network", scored, 0.95)
    want = (scored["network"]["metrics"]["f_beta"]["value"]
            - scored["baseline"]["metrics"]["f_beta"]["value"])
    assert clear["shipped_minus_other"] == pytest.approx(want) and want > 0.3
    assert clear["low"] <= want <= clear["high"] and clear["low"] > 0
    assert clear["other_model"] == "coin" and "shipped model is better" in clear["verdict"]
    # had the coin shipped, the verdict names the other model as the better one
    assert "other model is better" in compare_on_test("f_beta", True, "baseline", scored,
                                                      0.95)["verdict"]
    twins = {"network": scored["network"], "baseline": evaluate(nudged, "nudged")}
    close = compare_on_test("f_beta", True, "network", twins, 0.95)
    assert close["low"] <= 0 <= close["high"] and "does not tell them apart" in close["verdict"]
    # paired: narrower than either model's own interval (unpaired, the difference of two
    # independent scores would spread about 1.4 times as wide as each)
    own = [twins[k]["metrics"]["f_beta"]["high"] - twins[k]["metrics"]["f_beta"]["low"]
           for k in twins]
    assert close["high"] - close["low"] < min(own)
    assert compare_on_test("f_beta", True, "network", {"network": scored["network"]}, 0.95) is None


def test_forecast_intervals_resample_horizon_steps_and_mase_matches_score():
    x, y, _, _ = co2_windows(horizon=52)
    last = slice(len(x) - 1, len(x))  # the held-out horizon: one window
    test = {"ids": np.array(["co2@final"]), "x": x[last], "y": y[last]}
    naive = SeasonalNaive(season=52, horizon=52).fit(x).predict(x[last])
    choice = json.loads(Path(write_metric(Path(__import__("tempfile").mkdtemp()),
                                          "forecasting", frequency="W-SAT")).read_text())
    result, frame = get_task("forecasting").evaluate(
        choice, test, naive, (), None, "seasonal_naive",
        {"resamples": 300, "seed": 0, "confidence": 0.95})
    mase = result["metrics"]["mase"]
    assert mase["value"] == pytest.approx(score(choice, y[last], naive, history=x[last][:, :, 0])
                                          ["mase"])
    assert mase["low"] <= mase["value"] <= mase["high"] and result["units"] == 52
    assert result["bootstrap_unit"].startswith("circular blocks of 4 consecutive forecast steps")
    assert len(frame) == 52 and (frame["step"] == np.arange(1, 53)).all()


def _forecast_choice():
    return json.loads(Path(write_metric(Path(__import__("tempfile").mkdtemp()), "forecasting",
                                        frequency="W-SAT")).read_text())


def test_forecast_intervals_resample_whole_windows_of_many_series():
    """80 M4 Weekly series, each forecast by its last value over the official 13 test weeks:
    the bootstrap resamples whole windows (one a series), since a window's errors go
    together over its steps. Its interval is more than twice as wide as that of resampling
    (window, step) pairs as if independent (3.2 times here), and holds the point MASE, the
    mean of the windows' MASE."""
    train = pd.read_csv(SHARED_DATA / "m4" / "Weekly-train.csv", nrows=80).set_index("V1")
    held = pd.read_csv(SHARED_DATA / "m4" / "Weekly-test.csv", nrows=80).set_index("V1")
    ids, y, last, scale = [], [], [], []
    for name in train.index:
        history = train.loc[name].dropna().to_numpy(float)
        ids.append(f"{name}@{len(history):06d}")
        y.append(held.loc[name].to_numpy(float))
        last.append(np.repeat(history[-1], 13))
        scale.append(np.mean(np.abs(np.diff(history))))
    test = {"ids": np.array(ids), "y": np.array(y), "scale": np.array(scale)}
    result, _ = get_task("forecasting").evaluate(
        _forecast_choice(), test, np.array(last), (), None, "naive",
        {"resamples": 1000, "seed": 0, "confidence": 0.95})
    errors = np.abs(test["y"] - np.array(last)) / test["scale"][:, None]
    mase = result["metrics"]["mase"]
    assert result["units"] == 80 and result["bootstrap_unit"] == "held-out windows, one a series"
    assert mase["value"] == pytest.approx(errors.mean(axis=1).mean())
    rng = np.random.default_rng(1)
    pairs = [errors.ravel()[rng.integers(0, errors.size, errors.size)].mean()
             for _ in range(1000)]
    assert mase["high"] - mase["low"] > 2 * np.subtract(*np.percentile(pairs, [97.5, 2.5]))
    assert mase["low"] < mase["value"] < mase["high"]


def test_overlapping_test_windows_of_one_series_are_resampled_in_runs():
    """The last 300 rolling windows of co2 (a test period set by a date): they overlap, so
    the bootstrap resamples runs of 52 consecutive windows, six of them."""
    x, y, starts, _ = co2_windows(horizon=52)
    picked = slice(len(x) - 300, len(x))
    test = {"ids": np.array([f"co2@{s:06d}" for s in starts[picked]]), "x": x[picked],
            "y": y[picked]}
    naive = SeasonalNaive(season=52, horizon=52).fit(x).predict(x[picked])
    result, _ = get_task("forecasting").evaluate(
        _forecast_choice(), test, naive, (), None, "seasonal_naive",
        {"resamples": 300, "seed": 0, "confidence": 0.95})
    assert result["units"] == 6
    assert result["bootstrap_unit"] == "runs of up to 52 overlapping held-out windows of a series"
    mase = result["metrics"]["mase"]
    assert mase["low"] < mase["value"] < mase["high"]


def _summary(model: str, mean: float, primary: str = "accuracy") -> dict:
    """A CV summary as nn_summary and baseline_summary write it (one model)."""
    return {"primary": primary, "greater_is_better": primary == "accuracy", "best": model,
            "models": {model: {primary: {"mean": mean, "std": 0.01}}},
            "headline": {"model": model}}


def _baseline_summary(folder: Path, model: str, mean: float, primary: str = "accuracy") -> None:
    (folder / "baseline.json").write_text(json.dumps(_summary(model, mean, primary)))
    pd.DataFrame({"id": ["a"], "model": [model], "y_true": ["1"]}).to_parquet(
        folder / "baseline_oof.parquet")


def _final_context(dataset, folder, nn, metric, histories, out, **values) -> RunContext:
    """What rule final_train hands train_final (the baseline summary beside `nn`)."""
    return RunContext.for_dataset("toy", dataset, inputs={
        "index": str(folder / "index.parquet"), "metric": metric,
        "summary": str(nn / "summary.json"), "oof": str(nn / "oof.parquet"),
        "histories": histories, "baseline": str(nn.parent / "baseline.json")},
        outputs={"model": str(out / "model.keras")}, **values)


def _baseline_context(dataset, folder, summaries, metric, out, **values) -> RunContext:
    """What rule final_baseline hands export_baseline."""
    return RunContext.for_dataset("toy", dataset, inputs={
        "index": str(folder / "index.parquet"), "metric": metric,
        "summary": str(summaries / "baseline.json"),
        "oof": str(summaries / "baseline_oof.parquet")},
        outputs={"model": str(out / "baseline.skops")}, **values)


def _test_context(dataset, out, metric, test, **values) -> RunContext:
    """What rule final_test hands score_test (`test`: plan and test shards; the trainval
    index beside the plan)."""
    plan, shards = test
    return RunContext.for_dataset("toy", dataset, inputs={
        "model": str(out / "model.keras"), "shipped": str(out / "shipped.json"),
        "baseline_model": str(out / "baseline.skops"), "metric": metric, "plan": plan,
        "test_shards": shards, "index": str(Path(plan).parent / "index.parquet")}, outputs={
        "metrics": str(out / "test_metrics.json"),
        "predictions": str(out / "predictions.parquet"),
        "explanations": str(out / "explanations.json")}, **values)


def _plan_with_test(folder: Path, test_x, test_labels) -> tuple[str, list[str]]:
    """plan.parquet (trainval rows of the index + test rows) and a test shard under final/."""
    index = pd.read_parquet(folder / "index.parquet")
    ids = np.array([f"test-{i:04d}" for i in range(len(test_x))])
    final = folder / "final" / "tensors"
    final.mkdir(parents=True)
    save_shard(str(final / "test-00000.npz"), {"ids": ids, "x": test_x})
    test = pd.DataFrame({"id": ids, "label": test_labels, "role": "test", "fold": pd.NA,
                         "in_sample": False, "shard": "test-00000"})
    plan = pd.concat([index, test], ignore_index=True)
    plan["fold"] = plan["fold"].astype("Int64")
    plan.to_parquet(folder / "plan.parquet", index=False)
    return str(folder / "plan.parquet"), [str(final / "test-00000.npz")]


def test_a_shipped_series_baseline_records_its_length_and_predicts_a_ts_file(tmp_path):
    """MiniRocket exported for PickupGestureWiimoteZ (UCR, unequal lengths, the shards'
    series resampled to their longest, 361 steps, with `length` unset as shipped): its card
    records the 361 steps, and `predict` on the official test .ts file (other lengths, up to
    361) resamples every series to them and gives the exported pipeline's predictions for
    the same series decoded as the shards decode them. Before, the card said `length: null`
    and each series kept its own length, so no batch could be formed."""
    from dlworkflow.items import Item
    from dlworkflow.modalities import create_modality
    from dlworkflow.predict import file_series, predict
    from dlworkflow.shipping import load_baseline
    from tests.conftest import SHARED_DATA

    layout = {"kind": "ts"}
    modality = create_modality("timeseries", {}, layout)
    series = {part: file_series(layout, SHARED_DATA / "ucr" / f"PickupGestureWiimoteZ_{part}.ts",
                                ("ts",)) for part in ("TRAIN", "TEST")}
    x = np.stack([modality.tensorize(data, Item(name, name), {"length": 361})
                  for name, data in series["TRAIN"]])
    def labels(part):
        text = (SHARED_DATA / "ucr" / f"PickupGestureWiimoteZ_{part}.ts").read_text()
        return np.asarray([line.rsplit(":", 1)[1].strip()
                           for line in text.split("@data")[1].split("\n") if line.strip()])

    folder = write_shards(tmp_path / "tensors", x, labels("TRAIN"), np.arange(len(x)) % 5)
    metric = write_metric(folder, "classification", labels("TRAIN"))
    _baseline_summary(tmp_path, "minirocket_ridge", 0.8)
    out = tmp_path / "final"
    dataset = {"modality": "timeseries", "task": "classification", "layout": layout}
    card = export_baseline(_baseline_context(dataset, folder, tmp_path, metric, out, seed=7,
                                             sections={"baseline": {}, "tensors": {}}))
    assert card["tensors"] == {"length": 361}
    (out / "shipped.json").write_text(json.dumps({"shipped": "baseline"}))
    lengths = {len(modality.channels(data)) for _, data in series["TEST"]}
    assert len(lengths) > 10 and max(lengths) <= 361
    frame = predict(out, [SHARED_DATA / "ucr" / "PickupGestureWiimoteZ_TEST.ts"])
    assert len(frame) == 50
    estimator, _ = load_baseline(out)
    test = np.stack([modality.tensorize(data, Item(name, name), {"length": 361})
                     for name, data in series["TEST"]])
    expected = estimator.predict(modality.flat(test, {}))
    assert frame["prediction"].astype(str).tolist() == [card["classes"][k] for k in expected]
    assert (frame["prediction"].astype(str) == labels("TEST")).mean() > 0.66  # 1-NN DTW's


def test_final_model_trains_on_every_trainval_row_and_scores_the_test_once(tmp_path):
    x, labels, folds = digits_images(500)
    folder = write_shards(tmp_path / "tensors", x[:400], labels[:400], folds[:400])
    metric = write_metric(folder, "classification", labels[:400])
    plan, test_shards = _plan_with_test(folder, x[400:], labels[400:])
    nn = tmp_path / "nn"
    nn.mkdir()
    histories = [_history(nn / f"history-{k}.csv", [1e-3, 1e-3, 5e-4]) for k in range(5)]
    (nn / "summary.json").write_text(json.dumps({"best_epochs": [2, 3, 3, 2, 3],
                                                 **_summary("image_wide_cnn", 0.95)}))
    pd.DataFrame({"id": ["a"], "y_true": ["1"]}).to_parquet(nn / "oof.parquet")
    _baseline_summary(tmp_path, "knn", 0.9)
    out = tmp_path / "final"
    card = train_final(_final_context(IMAGE, folder, nn, metric, histories, out, seed=7,
                                      sections={"train": QUICK, "final": {"epochs": "auto"}}))
    shipped = json.loads((out / "shipped.json").read_text())
    assert shipped["shipped"] == "network" and "0.9500" in shipped["why"]  # the CV winner
    baseline = {"knn_neighbors": 3, "image": {"pixels": 8}, "C": 1.0}
    export_baseline(_baseline_context(IMAGE, folder, tmp_path, metric, out, seed=7,
                                      sections={"baseline": baseline, "tensors": {}}))
    assert card["training"]["train_rows"] == 400  # all trainval rows, no validation part
    assert card["training"]["epochs"]["epochs"] == 3 and card["threshold"] is None
    assert len(pd.read_csv(out / "history.csv")) == 3
    assert "val_loss" not in pd.read_csv(out / "history.csv")
    assert pd.read_csv(out / "history.csv")["learning_rate"].round(6).tolist() == [1e-3, 1e-3,
                                                                                   5e-4]
    result = score_test(_test_context(
        IMAGE, out, metric, (plan, test_shards), seed=7,
        sections={"final": {"bootstrap": 200, "confidence": 0.9, "explanations": 1}}))
    for kind in ("network", "baseline"):
        accuracy = result[kind]["metrics"]["accuracy"]
        assert result[kind]["rows"] == 100
        assert accuracy["low"] <= accuracy["value"] <= accuracy["high"]
    assert result["baseline"]["model"] == "knn"
    assert result["baseline"]["metrics"]["accuracy"]["value"] > 0.8  # real digits, k-NN
    predictions = pd.read_parquet(out / "predictions.parquet")
    assert sorted(predictions.groupby("model")["id"].nunique()) == [100, 100]
    written = json.loads((out / "test_metrics.json").read_text())
    assert written["headline"]["model"] == "image_wide_cnn"  # auto's image classifier
    comparison = written["comparison"]  # network minus the k-NN, on the same resamples
    assert comparison["shipped"] == "network" and comparison["other_model"] == "knn"
    assert comparison["shipped_minus_other"] == pytest.approx(
        result["network"]["metrics"]["accuracy"]["value"]
        - result["baseline"]["metrics"]["accuracy"]["value"])
    assert comparison["low"] <= comparison["shipped_minus_other"] <= comparison["high"]
    assert "_draws" not in json.dumps(written)
    # SHAP explains the network's most confident test row of each class it predicted, for
    # the report
    explained = json.loads((out / "explanations.json").read_text())
    network = predictions[predictions["model"] == "image_wide_cnn"].set_index("id")
    predicted = network["y_pred"].astype(str)
    confidence = network[[c for c in network if c.startswith("p_")]].max(axis=1)
    assert sorted(e["predicted"] for e in explained) == sorted(predicted.unique())
    for cell in explained:
        assert cell["predicted"] == predicted[cell["id"]] and "<" in cell["html"]
        assert confidence[cell["id"]] == confidence[predicted == cell["predicted"]].max()


def test_test_arrays_code_labels_with_trainval_classes_and_keep_the_held_out_horizon(tmp_path):
    x, labels, folds = digits_images(60)
    folder = write_shards(tmp_path / "t", x[:50], labels[:50], folds[:50])
    test_labels = labels[50:].copy()
    test_labels[0] = "unseen"
    plan, shards = _plan_with_test(folder, x[50:], test_labels)
    arrays = load_test_arrays(CLASSIFICATION, plan, shards, tuple(str(d) for d in range(10)))
    assert arrays["y"][0] == -1 and (arrays["y"][1:] == labels[51:].astype(int)).all()
    windows = pd.DataFrame({"id": [f"s@{i}" for i in range(5)], "series": "s",
                            "target_start": [96, 97, 98, 99, 100],
                            "target_end": [99, 100, 101, 102, 103], "role": "test",
                            "shard": "test-00000"})
    windows.to_parquet(tmp_path / "windows.parquet")
    store = tmp_path / "w"
    store.mkdir()
    save_shard(str(store / "test-00000.npz"), {"ids": windows["id"].to_numpy(dtype=str),
                                          "x": np.zeros((5, 4, 1), np.float32),
                                          "y": np.zeros((5, 4), np.float32)})
    held = load_test_arrays(get_task("forecasting"), tmp_path / "windows.parquet",
                            [str(store / "test-00000.npz")], ())
    assert held["ids"].tolist() == ["s@3", "s@4"]  # targets from the first test step on


def test_shap_attributions_of_a_digit_add_up_to_the_change_they_explain(tmp_path):
    from dlworkflow.explain import explain, model_function
    from dlworkflow.modalities import create_modality
    from dlworkflow.predict import load_model
    from dlworkflow.train import train_network

    x, labels, folds = digits_images(300)
    folder = write_shards(tmp_path / "tensors", x[:250], labels[:250], folds[:250])
    train_network(RunContext.for_dataset("digits", IMAGE, seed=7,
                                         sections={"train": {**QUICK, "epochs": 3}},
                                         inputs={"index": str(folder / "index.parquet")}),
                  None, tmp_path / "m", 3)
    (tmp_path / "m" / "model.json").write_text("{}")
    model, _ = load_model(tmp_path / "m")
    proba = np.asarray(model.predict(x[250:], verbose=0))
    classes = tuple(str(d) for d in range(10))
    frame = pd.DataFrame({"id": [f"t{i}" for i in range(50)], "y_true": labels[250:],
                          "y_pred": np.asarray(classes)[proba.argmax(axis=1)],
                          **{f"p_{c}": proba[:, i] for i, c in enumerate(classes)}})
    modality = create_modality("image", {}, {"kind": "folders"})
    background = x[:100]
    cells = explain(model, modality, CLASSIFICATION, {"x": x[250:]}, frame, background,
                    limits=(1, 20, 200))
    predicted = set(frame["y_pred"])
    assert len(cells) == len(predicted) and {c["predicted"] for c in cells} == predicted
    for cell in cells[:3]:  # efficiency: attributions share out f(x) - f(all hidden)
        row = int(cell["id"][1:])
        output = classes.index(cell["predicted"])
        function = model_function(model, CLASSIFICATION, x.dtype, output)
        hidden = background.astype(np.float32).mean(axis=0)[None]
        change = function(x[250 + row: 251 + row]) - function(hidden)
        assert cell["total"] == pytest.approx(float(change[0]), abs=2e-3)
        assert cell["html"].startswith('<img alt="SHAP attributions" src="data:image/png')


def test_explained_rows_are_capped_in_all_each_classs_best_row_first():
    """SHAP's cost is per row (seconds a row with a pretrained backbone): a set of 30
    classes at 2 rows a class explains at most `final.explained_rows` rows, one for each of
    its first classes, the most confident, before any class's second."""
    rng = np.random.default_rng(3)
    classes = [f"c{k:02d}" for k in range(30)]
    proba = rng.dirichlet(np.ones(30), size=300)
    predicted = np.asarray(classes)[proba.argmax(axis=1)]
    frame = pd.DataFrame({"y_pred": predicted, **{f"p_{c}": proba[:, k]
                                                  for k, c in enumerate(classes)}})
    confidence = proba.max(axis=1)
    uncapped = CLASSIFICATION.explained_rows(frame, classes, 2)
    present = [c for c in classes if c in set(predicted)]
    assert len(uncapped) == sum(min(2, (predicted == c).sum()) for c in present) > 20
    capped = CLASSIFICATION.explained_rows(frame, classes, 2, 20)
    assert len(capped) == 20 and len(set(capped)) == 20
    assert [predicted[row] for row in capped] == present[:20]  # one a class, in class order
    for row in capped:  # each its class's most confident row
        assert confidence[row] == confidence[predicted == predicted[row]].max()
    more = CLASSIFICATION.explained_rows(frame, classes, 2, len(present) + 5)
    seconds = [c for c in present if (predicted == c).sum() > 1][:5]
    assert sorted(predicted[more]) == sorted(present + seconds)  # then the seconds, in order
    assert CLASSIFICATION.explained_rows(frame, classes, 2, 0) == []
    assert get_task("regression").explained_rows(frame, (), 5, 3) == [0, 1, 2]


def test_final_regression_streams_shards_and_scores_in_target_units(tmp_path, monkeypatch):
    """Digit value as a regression target; the final model streams its shards (as it does
    when the data exceeds the in-RAM budget) and the test is scored in target units."""
    import dlworkflow.train

    monkeypatch.setattr(dlworkflow.train, "IN_MEMORY_BYTES", 0)
    x, labels, folds = digits_images(400)
    values = labels.astype(float)
    folder = write_shards(tmp_path / "tensors", x[:320], values[:320], folds[:320])
    metric = write_metric(folder, "regression", values[:320])
    plan, test_shards = _plan_with_test(folder, x[320:], values[320:])
    nn = tmp_path / "nn"
    nn.mkdir()
    histories = [_history(nn / f"history-{k}.csv", [1e-3] * 4) for k in range(3)]
    (nn / "summary.json").write_text(json.dumps({"best_epochs": [4, 4, 4],
                                                 **_summary("image_cnn", 1.5, "rmse")}))
    _baseline_summary(tmp_path, "ridge", 1.5, "rmse")  # a tie: the simpler baseline ships
    regression = {**IMAGE, "task": "regression"}
    out = tmp_path / "final"
    card = train_final(_final_context(regression, folder, nn, metric, histories, out, seed=3,
                                      sections={"train": QUICK, "final": {}}))
    assert json.loads((out / "shipped.json").read_text())["shipped"] == "baseline"
    export_baseline(_baseline_context(regression, folder, tmp_path, metric, out, seed=3,
                                      sections={"baseline": {"image": {"pixels": 8}},
                                                "tensors": {}}))
    assert card["training"]["train_rows"] == 320 and card["threshold"] is None
    result = score_test(_test_context(regression, out, metric, (plan, test_shards), seed=3,
                                      sections={"final": {"bootstrap": 200, "explanations": 0}}))
    assert json.loads((out / "explanations.json").read_text()) == []
    assert result["headline"]["kind"] == "baseline" and result["headline"]["model"] == "ridge"
    primary = result["primary"]
    assert primary in ("mae", "rmse")
    for kind in ("network", "baseline"):
        entry = result[kind]["metrics"][primary]
        assert entry["low"] <= entry["value"] <= entry["high"]
    predictions = pd.read_parquet(out / "predictions.parquet")
    network = predictions[predictions["model"] == "image_cnn"]
    assert network["y_pred"].between(-5, 15).all()  # in digit units, not standardised
    spread = float(np.std(values[320:]))  # RMSE of always predicting the mean
    assert result["baseline"]["metrics"][primary]["value"] < 0.85 * spread  # real signal
    assert (out / "plots" / "scatter.csv").is_file()


def test_the_report_calls_a_run_of_few_steps_a_quick_look():
    from dlworkflow.report import quick_look

    def summary(epochs: int, rows: int, slices: int = 1) -> dict:
        return {"fold_details": {"image_cnn": {
            str(k): {"epochs_run": epochs, "train_rows": rows, "global_batch_size": 16,
                     "pass_slices": slices} for k in range(3)}}}

    # the README's quick look: 2 epochs of 40 rows = 6 steps a fold
    warning = quick_look(summary(2, 40))
    assert warning is not None and "about 6 optimizer steps" in warning
    # the shipped recipe on a small set: 300 epochs of 3 steps
    assert quick_look(summary(300, 40)) is None
    # 2 epochs that were each a tenth of a pass of 1,000 steps: 200 steps, not 2,000
    assert "about 200 optimizer steps" in quick_look(summary(2, 16_000, slices=10))
    assert quick_look({"fold_details": {}}) is None  # nothing recorded: nothing claimed


def test_spectrogram_attributions_are_drawn_as_spectrograms_with_axes(monkeypatch):
    """Bands upwards (low frequencies at the bottom, as the EDA draws them), time across in
    seconds, labelled; a picture's map keeps no axes."""
    import dlworkflow.figures
    from dlworkflow.modalities import create_modality

    drawn = []
    monkeypatch.setattr(dlworkflow.figures, "figure_uri",
                        lambda figure: drawn.append(figure) or "data:image/png;base64,")
    audio = create_modality("audio", {}, {"kind": "folders"})
    spectrogram = np.zeros((64, 101, 1), np.float32)
    heat = np.zeros((64, 101, 1))
    heat[2, 10, 0] = 1.0  # a low band, early: bottom left
    settings = {"sample_rate": 16000, "hop_length": 160, "representation": "logmel"}
    audio.attribution_html(spectrogram, heat, "the digit 3", settings)
    left, right = drawn[-1].axes
    assert left.get_xlabel() == right.get_xlabel() == "time (s)"
    assert left.get_ylabel() == "mel band"
    image = right.get_images()[-1]
    assert image.origin == "lower"
    assert image.get_extent() == pytest.approx([0.0, 1.01, 0.0, 64.0])
    row, column = np.unravel_index(np.argmax(image.get_array()), image.get_array().shape)
    assert (row, column) == (2, 10)  # row 2 of 64 drawn from the bottom: a low band
    picture = create_modality("image", {}, {"kind": "folders"})
    picture.attribution_html(np.zeros((8, 8, 1), np.float32), np.zeros((8, 8, 1)), "7", {})
    assert drawn[-1].axes[0].get_xlabel() == "" and not drawn[-1].axes[0].get_xticks().size


def test_the_per_class_table_leaves_undefined_ratios_out():
    """A class absent from the test has no recall, one never predicted no precision: the
    table gives NaN there (the report draws a dash), not a 0 that reads as a failure."""
    from dlworkflow.tasks.classification import per_class_table

    truth, predicted = np.array(["0", "0", "1", "1"]), np.array(["0", "2", "1", "0"])
    rows = {row["class"]: row for row in per_class_table(truth, predicted, ["0", "1", "2", "3"])}
    assert rows["0"]["precision"] == 0.5 and rows["0"]["recall"] == 0.5
    assert rows["1"]["precision"] == 1.0 and rows["1"]["recall"] == 0.5
    # "2": predicted once, never true: its precision is a real 0, its recall undefined
    assert rows["2"]["precision"] == 0.0 and np.isnan(rows["2"]["recall"])
    assert np.isnan(rows["3"]["precision"]) and np.isnan(rows["3"]["recall"])
    assert rows["3"]["support"] == 0
