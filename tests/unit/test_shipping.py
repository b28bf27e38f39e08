"""The final step ships the cross-validated winner; an exported baseline is safe to load and
predicts from raw inputs like a network."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from dlworkflow.errors import ConfigError
from dlworkflow.evaluate import paired_folds
from dlworkflow.shipping import (
    choose_shipped,
    load_baseline,
    load_shipped,
    save_baseline,
)
from tests.helpers.shards import sms_texts


def _summary(model: str, mean: float, primary: str = "f_beta", greater: bool = True) -> dict:
    return {"primary": primary, "greater_is_better": greater, "best": model,
            "models": {model: {primary: {"mean": mean, "std": 0.02}}}}


def test_the_better_cv_score_ships_and_a_tie_goes_to_the_baseline():
    network, baseline = _summary("text_cnn", 0.93), _summary("tfidf_logreg", 0.95)
    decision = choose_shipped("auto", network, baseline, exported=True)
    assert decision["shipped"] == "baseline" and decision["model"] == "tfidf_logreg"
    assert "0.9300" in decision["why"] and "0.9500" in decision["why"]
    assert "(CV f_beta: network" in decision["why"]
    named = choose_shipped("auto", network, baseline, True, label="F1 of spam")["why"]
    assert "(CV F1 of spam: network text_cnn 0.9300" in named  # as the reports name it
    assert choose_shipped("auto", _summary("text_cnn", 0.97), baseline, True)["shipped"] == \
        "network"
    assert choose_shipped("auto", _summary("cnn", 0.95), baseline, True)["shipped"] == "baseline"
    # lower is better for an error: the smaller MASE wins
    errors = _summary("forecast_cnn", 0.8, "mase", False), _summary("ridge_lags", 0.9, "mase",
                                                                     False)
    assert choose_shipped("auto", *errors, True)["shipped"] == "network"
    assert choose_shipped("network", network, baseline, True)["shipped"] == "network"
    # final.baseline: false exports no baseline: the network ships, and asking for the
    # baseline is an error that names both settings
    unexported = choose_shipped("auto", network, baseline, exported=False)
    assert unexported["shipped"] == "network" and "final.baseline is false" in unexported["why"]
    with pytest.raises(ConfigError, match=r"final\.model: baseline, but final\.baseline is false"):
        choose_shipped("baseline", network, baseline, exported=False)
    with pytest.raises(ConfigError, match=r"final\.model"):
        choose_shipped("best", network, baseline, True)


def _folds(model: str, folds: list[float], primary: str = "accuracy",
           greater: bool = True) -> dict:
    """_summary with the fold scores that give its mean and std."""
    summary = _summary(model, float(np.mean(folds)), primary, greater)
    summary["models"][model][primary].update(std=float(np.std(folds, ddof=1)), folds=folds)
    return summary


def test_the_reason_says_whether_the_folds_tell_the_two_models_apart():
    from scipy.stats import t as student
    from scipy.stats import ttest_rel

    network, baseline = [0.99, 0.98, 0.995, 0.985, 0.99], [0.97, 0.96, 0.97, 0.955, 0.975]
    paired = paired_folds(network, baseline, greater_is_better=True)
    plain = ttest_rel(network, baseline).statistic
    assert paired["folds"] == 5 and paired["mean"] == pytest.approx(0.022)
    assert paired["t"] == pytest.approx(plain)
    # Nadeau and Bengio: the mean lead's variance is std² (1/k + 1/(k - 1)), not std² / k
    assert paired["t_corrected"] == pytest.approx(plain * np.sqrt(0.2 / (0.2 + 0.25)))
    assert paired["critical"] == pytest.approx(student.ppf(0.975, 4))
    clear = choose_shipped("auto", _folds("cnn", network), _folds("knn", baseline), True)
    assert clear["shipped"] == "network" and clear["paired"]["beyond_noise"]
    assert ("Fold by fold the network is ahead by 0.0220 on average, beyond the folds' noise "
            "(corrected paired t ") in clear["why"]
    # subj_3775's folds on an AVX-512 host: the same mean, up in some folds and down in others
    close = choose_shipped("auto", _folds("text_wide_cnn", [0.9123, 0.9089, 0.8957, 0.9172, 0.894]),
                           _folds("tfidf_logreg", [0.9106, 0.9007, 0.9056, 0.9156, 0.8957]), True)
    assert close["shipped"] == "baseline" and not close["paired"]["beyond_noise"]
    assert "the network is level, within the folds' noise" in close["why"]
    assert "the folds cannot tell the two apart" in close["why"]
    # an error: lower is better, so a network with the lower MASE is ahead; the same lead in
    # every fold is beyond any noise, and the file stays JSON (no infinity)
    errors = choose_shipped("auto", _folds("forecast_cnn", [0.8, 0.7, 0.9], "mase", False),
                            _folds("ridge_lags", [0.9, 0.8, 1.0], "mase", False), True)
    assert errors["shipped"] == "network" and errors["paired"]["mean"] == pytest.approx(0.1)
    assert errors["paired"]["beyond_noise"] and errors["paired"]["t"] is None
    assert "ahead by 0.1000 on average, beyond the folds' noise (the same lead in each of the 3"\
        in errors["why"]
    json.dumps(errors, allow_nan=False)
    # folds that do not pair (an older summary without them, or other counts): no sentence
    assert paired_folds([0.9, 0.8], [0.9], True) is None
    unpaired = choose_shipped("auto", _summary("cnn", 0.97), _summary("knn", 0.95), True)
    assert unpaired["paired"] is None and "Fold by fold" not in unpaired["why"]


def test_a_baseline_the_field_ranks_high_is_replaced_only_by_a_lead_beyond_the_noise():
    """`final.lead: auto`: over MiniRocket a network must lead beyond the folds' noise. The
    folds of ACSF1 (fewer series than the test's 100, MiniRocket on the series as they are):
    series_fcn 0.01 ahead, far within the noise, while MiniRocket scored 0.91 on the test
    against the network's 0.72. Over a baseline of another kind the better mean still ships,
    and `final.lead` says the same for every baseline when it is not auto."""
    network = _folds("series_fcn", [0.7, 0.75, 0.8, 0.65, 0.55])
    minirocket = _folds("minirocket_ridge", [0.75, 0.7, 0.6, 0.5, 0.85])
    decision = choose_shipped("auto", network, minirocket, True)
    assert decision["shipped"] == "baseline" and decision["model"] == "minirocket_ridge"
    assert not decision["paired"]["beyond_noise"] and decision["paired"]["mean"] > 0
    assert ("the network's cross-validated lead is not beyond the folds' noise, and "
            "minirocket_ridge is a baseline the field ranks level with") in decision["why"]
    # the same folds against a baseline of another kind: the better mean ships, as before
    other = _folds("nn1_euclidean", [0.75, 0.7, 0.6, 0.5, 0.85])
    assert choose_shipped("auto", network, other, True)["shipped"] == "network"
    assert choose_shipped("auto", network, other, True, lead="beyond_noise")["shipped"] == \
        "baseline"
    assert choose_shipped("auto", network, minirocket, True, lead="mean")["shipped"] == "network"
    # a lead beyond the noise replaces MiniRocket, and the reason says what it had to clear
    clear = choose_shipped("auto", _folds("series_fcn", [0.9, 0.85, 0.8, 0.75, 0.95]),
                           minirocket, True)
    assert clear["shipped"] == "network" and clear["paired"]["beyond_noise"]
    assert "a lead beyond the folds' noise, as replacing minirocket_ridge asks" in clear["why"]
    # a network behind, or folds that do not pair: the baseline; a forced choice stands
    assert choose_shipped("auto", _summary("series_fcn", 0.9), _summary("minirocket_ridge", 0.8),
                          True)["shipped"] == "baseline"
    assert choose_shipped("network", network, minirocket, True)["shipped"] == "network"
    with pytest.raises(ConfigError, match=r"final\.lead: 'always'"):
        choose_shipped("auto", network, minirocket, True, lead="always")


@pytest.fixture(scope="module")
def sms_baseline(tmp_path_factory):
    """The text modality's TF-IDF logistic regression (NB-weighted: two classes), fitted
    on real SMS and exported."""
    from dlworkflow.modalities import create_modality

    texts, labels, _ = sms_texts(600)
    modality = create_modality("text", {}, {"kind": "delimited"})
    estimator = modality.baselines("classifier", {"text": {"C": 10.0}}, 0)["tfidf_logreg"]
    classes = sorted(set(labels))
    estimator.fit(texts[:500], np.searchsorted(classes, labels[:500]))
    folder = tmp_path_factory.mktemp("final")
    card = {"kind": "baseline", "model": "tfidf_logreg", "architecture": "tfidf_logreg",
            "modality": "text", "task": "classification", "classes": classes,
            "threshold": {"positive": "spam", "threshold": 0.3}, "layout": {"kind": "delimited"},
            "tensors": {"max_characters": 10000}, "flat": {}}
    save_baseline(estimator, folder, card)
    (folder / "shipped.json").write_text(json.dumps({"shipped": "baseline"}))
    return folder, estimator, texts[500:], classes


def test_an_exported_baseline_predicts_raw_texts_as_the_fitted_one(sms_baseline):
    from dlworkflow.predict import predict

    folder, estimator, texts, classes = sms_baseline
    loaded, card = load_baseline(folder)
    assert card["model"] == "tfidf_logreg"
    expected = estimator.predict_proba(texts)
    assert np.allclose(loaded.predict_proba(texts), expected)
    # `dlworkflow predict` on raw strings: the shipped baseline, with its tuned threshold
    frame = predict(folder, texts[:40])
    assert np.allclose(frame["p_spam"], expected[:40, classes.index("spam")])
    assert (frame["prediction"] == np.where(frame["p_spam"] >= 0.3, "spam", "ham")).all()
    assert load_shipped(folder).kind == "baseline"


def test_an_exported_tfidf_vocabulary_is_two_arrays_not_a_node_a_term(sms_baseline,
                                                                        tmp_path):
    """The TF-IDF vocabularies go into the skops file as arrays of UTF-8 bytes and ends, so
    a large vocabulary loads in milliseconds, and come back term for term, column for column,
    non-ASCII terms too; saving leaves the fitted estimator as it was, and saving it again
    writes the same bytes."""
    import zipfile

    folder, estimator, texts, _ = sms_baseline
    save_baseline(estimator, tmp_path, json.loads((folder / "baseline.json").read_text()))
    assert (tmp_path / "baseline.skops").read_bytes() == (folder / "baseline.skops").read_bytes()
    fitted = dict(estimator.named_steps["tfidf"].transformer_list)
    loaded, card = load_baseline(folder)
    assert card["skops_types"] == ["dlworkflow.estimators.CompactTfidfVectorizer",
                                   "dlworkflow.estimators.NBLogisticRegression"]
    terms = 0
    for name, vectorizer in loaded.named_steps["tfidf"].transformer_list:
        assert vectorizer.vocabulary_ == fitted[name].vocabulary_  # still on the fitted one
        terms += len(vectorizer.vocabulary_)
    assert any(not term.isascii() for term in fitted["chars"].vocabulary_)  # "£" and the like
    assert terms > 5_000
    with zipfile.ZipFile(folder / "baseline.skops") as archive:
        schema = archive.read("schema.json").decode()
    assert schema.count('"__id__"') < terms // 20  # skops's nodes: a few hundred, not one a term
    assert np.array_equal(loaded.predict_proba(texts), estimator.predict_proba(texts))


class Smuggled(BaseEstimator, ClassifierMixin):
    """A class from outside scikit-learn and dlworkflow.estimators."""

    def fit(self, x, y):
        self.classes_ = np.unique(y)
        return self


def test_loading_refuses_types_from_outside_the_trusted_modules(tmp_path):
    save_card = {"kind": "baseline", "model": "x"}
    with pytest.raises(ValueError, match="Smuggled"):
        save_baseline(Smuggled().fit([[0], [1]], [0, 1]), tmp_path, save_card)


def test_the_cards_list_of_types_cannot_widen_what_loads(tmp_path):
    from dlworkflow.estimators import LagRidge

    rng = np.random.default_rng(0)
    windows = rng.normal(size=(30, 8, 1))
    model = LagRidge().fit(windows, rng.normal(size=(30, 2)))
    save_baseline(model, tmp_path, {"kind": "baseline", "model": "ridge_lags"})
    card_path = tmp_path / "baseline.json"
    card = json.loads(card_path.read_text())
    assert card["skops_types"] == ["dlworkflow.estimators.LagRidge"]
    loaded, _ = load_baseline(tmp_path)
    assert np.allclose(loaded.predict(windows), model.predict(windows))
    # a type the file holds but the card leaves out: skops refuses the file
    card_path.write_text(json.dumps({**card, "skops_types": []}))
    with pytest.raises(Exception, match="LagRidge"):
        load_baseline(tmp_path)
    # a card that lists a type from outside the trusted modules is refused before loading
    card_path.write_text(json.dumps({**card, "skops_types": [*card["skops_types"],
                                                             "posix.system"]}))
    with pytest.raises(ValueError, match=r"posix\.system"):
        load_baseline(tmp_path)


def test_loading_a_model_saved_with_other_library_versions_warns(sms_baseline, tmp_path,
                                                                 caplog):
    """The card records the versions it was made with; loading with the same ones is
    silent, with another scikit-learn the warning names it and both versions."""
    import shutil

    from dlworkflow.provenance import environment

    folder, *_ = sms_baseline
    copy = tmp_path / "final"
    shutil.copytree(folder, copy)
    card = json.loads((copy / "baseline.json").read_text())
    card["environment"] = environment()
    (copy / "baseline.json").write_text(json.dumps(card))
    with caplog.at_level("WARNING", logger="dlworkflow.shipping"):
        load_shipped(copy)
    assert not caplog.records
    here = card["environment"]["scikit-learn"]
    card["environment"].update({"scikit-learn": "0.1.0", "keras": "0.1.0"})  # keras: not read
    (copy / "baseline.json").write_text(json.dumps(card))
    with caplog.at_level("WARNING", logger="dlworkflow.shipping"):
        assert load_shipped(copy).kind == "baseline"  # it still loads
    [record] = caplog.records
    assert f"scikit-learn 0.1.0 (here {here})" in record.getMessage()
    assert "keras" not in record.getMessage() and str(copy) in record.getMessage()


def test_a_baselines_size_counts_the_numbers_it_stores():
    """The report's size of a shipped baseline: the numbers it keeps to predict, as a
    network's parameters (it said 0 for every baseline)."""
    import scipy.sparse
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    from dlworkflow.estimators import SeasonalNaive
    from dlworkflow.shipping import learned_values

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 7)), np.arange(60) % 3
    linear = LogisticRegression(max_iter=500).fit(x, y)
    weights = linear.coef_.size + linear.intercept_.size  # 21 + 3
    # plus the three class labels and the iteration count it also keeps, nothing more
    assert weights < learned_values(linear) <= weights + 3 + 1
    # a k-NN keeps its training rows: they are its parameters
    assert 60 * 7 <= learned_values(KNeighborsClassifier(3).fit(x, y)) <= 60 * 7 + 60 + 3 + 1
    # a sparse matrix counts its stored entries, not its shape
    linear.extra_ = scipy.sparse.random(1000, 1000, density=0.001, random_state=0, format="csr")
    assert learned_values(linear) == pytest.approx(weights + 1000, abs=4)
    assert learned_values(SeasonalNaive(52, 52).fit(x)) == 0  # fits each window as it goes


def test_the_exported_sms_baseline_reports_its_stored_values(sms_baseline):
    folder, estimator, _, _ = sms_baseline
    shipped = load_shipped(folder)
    model = estimator.named_steps["model"]
    assert shipped.parameters >= model.coef_.size + model.intercept_.size > 0


def test_a_network_predicts_texts_in_batches_of_similar_length_in_the_callers_order():
    """A batch of texts costs as much as its longest text (tokenised and encoded to its
    length), so real SMS messages go through the network sorted by length and come back in
    the order given; numbers keep their order."""
    import keras
    import tensorflow as tf

    from dlworkflow.shipping import by_length, network_outputs

    texts = np.asarray(sms_texts(300)[0])
    inputs = keras.Input((), dtype="string")
    length = keras.layers.Lambda(lambda t: tf.cast(tf.strings.length(t), "float32")[:, None],
                                 output_shape=(1,))
    model = keras.Model(inputs, length(inputs))
    longest = []

    class Recording:
        def predict(self, batches, verbose=0):
            longest.extend(max(len(t) for t in batch.numpy()) for batch in batches)
            return model.predict(batches, verbose=verbose)

    card = {"modality": "text", "layout": {"kind": "delimited"}}
    out = network_outputs(Recording(), card)({"x": texts})
    assert out[:, 0].tolist() == [len(t.encode()) for t in texts]  # the caller's order
    sizes = [min(64, len(texts) - start) for start in range(0, len(texts), 64)]
    unsorted = [max(map(len, texts[start:start + 64])) for start in range(0, len(texts), 64)]
    padded, before = np.dot(sizes, longest), np.dot(sizes, unsorted)
    assert padded < 0.6 * before, (padded, before)  # characters run, padding included
    assert by_length(np.zeros((3, 4), np.float32)) is None and by_length({"x": texts}) is None
