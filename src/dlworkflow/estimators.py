"""Unfitted traditional estimators for step 2, by name: what the modalities and tasks offer.

`kind` is what a task predicts from a flat row: a class (`classifier`) or a number
(`regressor`); forecasters take windows. Nothing here reads files or knows a step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, RidgeClassifierCV, RidgeCV
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import StandardScaler

CLASSIFIER = "classifier"
REGRESSOR = "regressor"


def class_probabilities(estimator: Any, x: Any, rows: int, classes: int) -> np.ndarray | None:
    """A fitted classifier's probabilities with a column for every class (zeros for a class
    its training rows lacked), or None when it gives none."""
    if not hasattr(estimator, "predict_proba"):
        return None
    proba = np.zeros((rows, classes))
    proba[:, estimator.classes_] = estimator.predict_proba(x)
    return proba


def _class_weight(settings: Mapping[str, Any]) -> str | None:
    weight = settings.get("class_weight", "none")
    return None if weight in (None, "none") else weight


def standard_baselines(kind: str, settings: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """Scaled flat vectors into logistic regression and k-NN (ridge and k-NN for a
    `regressor`)."""
    neighbours = int(settings.get("knn_neighbors", 5))
    if kind == REGRESSOR:
        return {"ridge": Pipeline([("scale", StandardScaler()),
                                   ("model", RidgeCV(alphas=np.logspace(-3, 3, 13)))]),
                "knn": Pipeline([("scale", StandardScaler()),
                                 ("model", KNeighborsRegressor(neighbours))])}
    return {"logreg": Pipeline([("scale", StandardScaler()),
                                ("model", LogisticRegression(C=float(settings.get("C", 1.0)),
                                                             max_iter=2000,
                                                             class_weight=_class_weight(settings),
                                                             random_state=seed))]),
            "knn": Pipeline([("scale", StandardScaler()),
                             ("model", KNeighborsClassifier(neighbours))])}


class CompactTfidfVectorizer(TfidfVectorizer):
    """scikit-learn's TfidfVectorizer, its fitted vocabulary saved as two arrays: the terms'
    UTF-8 bytes in column order, one after the other, and where each ends. skops writes a
    dict entry by entry, a node each: SMS's word and character vocabularies (79,285 terms)
    made a 17.6 MB `baseline.skops` that took 2.7 s to load in every job and every
    `dlworkflow predict` that reads it (docs/PERFORMANCE.md). The same fit, transform and
    outputs; only the saved state differs."""

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())  # outside sklearn's modules: the live __dict__
        vocabulary = state.pop("vocabulary_", None)
        if vocabulary is not None:
            encoded = [b""] * len(vocabulary)  # in column order: columns are 0 to n - 1
            for term, column in vocabulary.items():
                encoded[column] = term.encode("utf-8", "surrogatepass")
            state["vocabulary_bytes_"] = np.frombuffer(b"".join(encoded), dtype=np.uint8)
            state["vocabulary_ends_"] = np.cumsum([len(term) for term in encoded],
                                                  dtype=np.int64)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        if "vocabulary_bytes_" in state:
            data = state.pop("vocabulary_bytes_").tobytes()
            ends = state.pop("vocabulary_ends_").tolist()
            spans = enumerate(zip([0, *ends[:-1]], ends, strict=True))
            state["vocabulary_"] = {data[start:end].decode("utf-8", "surrogatepass"): column
                                    for column, (start, end) in spans}
        super().__setstate__(state)


def tfidf_baselines(kind: str, settings: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """Word (and optionally character) TF-IDF into logistic regression, on features scaled
    by naive Bayes log-count ratios for two classes (`text.nb_weights`, NBLogisticRegression;
    ridge for a `regressor`)."""
    text = settings.get("text") or {}
    parts = [("words", CompactTfidfVectorizer(ngram_range=(1, int(text.get("word_ngrams", 2))),
                                              sublinear_tf=True, min_df=1,
                                              max_features=text.get("max_features")))]
    if text.get("char_ngrams", True):
        parts.append(("chars", CompactTfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5),
                                                      sublinear_tf=True, min_df=2,
                                                      max_features=text.get("max_features"))))
    features = FeatureUnion(parts)
    if kind == REGRESSOR:
        return {"tfidf_ridge": Pipeline([("tfidf", features),
                                         ("model", RidgeCV(alphas=np.logspace(-3, 3, 13)))])}
    return {"tfidf_logreg": Pipeline([("tfidf", features), ("model", NBLogisticRegression(
        C=float(text.get("C", 10.0)), nb_weights=text.get("nb_weights", "auto"),
        class_weight=_class_weight(settings), random_state=seed))])}


class NBLogisticRegression(ClassifierMixin, BaseEstimator):
    """NB-LR: logistic regression on features scaled by naive Bayes log-count ratios (Wang
    and Manning, "Baselines and Bigrams", ACL 2012: NBSVM, here with the logistic loss).
    The ratio of a feature is log((a + its count in the positive rows) / (a + its count in
    the others)), each side normalised by its sum, counting a row once where the feature is
    non-zero; the regression then fits the rows scaled by those ratios, so features that
    tell the classes apart are cheap to weight and the others are damped.

    `nb_weights`: "auto" weighs two-class tasks, the setting the paper defines NBSVM for,
    and fits more classes with plain multinomial logistic regression; True also weighs
    more classes, one regression against the rest for each (the probabilities the softmax
    of the log-sigmoids of their scores: the sigmoids normalised to sum 1); False never
    weighs. On TREC's six classes one against the rest won cross-validation alone but tied
    inside text_wide_cnn and lost its official test by two points (docs/BENCHMARKS.md).
    Fitted, the ratios are folded into the coefficients: `coef_` and `intercept_` give the
    scores on the unscaled features, as a linear model's do."""

    def __init__(self, C: float = 10.0, nb_weights: bool | str = "auto", alpha: float = 1.0,
                 max_iter: int = 2000, class_weight: str | None = None,
                 random_state: int | None = None) -> None:
        self.C = C
        self.nb_weights = nb_weights
        self.alpha = alpha
        self.max_iter = max_iter
        self.class_weight = class_weight
        self.random_state = random_state

    def _ratios(self, present: Any, positive: np.ndarray) -> np.ndarray:
        inside = self.alpha + np.asarray(present[positive].sum(axis=0)).ravel()
        outside = self.alpha + np.asarray(present[~positive].sum(axis=0)).ravel()
        return np.log(inside / inside.sum()) - np.log(outside / outside.sum())

    def _regression(self) -> LogisticRegression:
        return LogisticRegression(C=self.C, max_iter=self.max_iter,
                                  class_weight=self.class_weight, random_state=self.random_state)

    def fit(self, x: Any, y: Any) -> NBLogisticRegression:
        import scipy.sparse as sp

        x = sp.csr_matrix(x, dtype=np.float64)
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError(f"NBLogisticRegression needs two classes or more; the training "
                             f"rows have one: {self.classes_[0]}")
        two = len(self.classes_) == 2
        weighted = self.nb_weights is True or (self.nb_weights == "auto" and two)
        self.one_vs_rest_ = weighted and not two
        self.n_features_in_ = x.shape[1]
        if not weighted:
            fitted = self._regression().fit(x, y)
            self.coef_, self.intercept_ = fitted.coef_, fitted.intercept_
            return self
        present = (x != 0).astype(np.float64)
        coefs, intercepts = [], []
        for target in self.classes_[1:] if two else self.classes_:
            positive = y == target
            ratios = self._ratios(present, positive)
            fitted = self._regression().fit(x.multiply(ratios).tocsr(), positive)
            coefs.append(fitted.coef_[0] * ratios)
            intercepts.append(fitted.intercept_[0])
        self.coef_ = np.vstack(coefs)
        self.intercept_ = np.asarray(intercepts)
        return self

    def decision_function(self, x: Any) -> np.ndarray:
        scores = np.asarray(x @ self.coef_.T) + self.intercept_
        return scores[:, 0] if len(self.classes_) == 2 else scores

    def predict_proba(self, x: Any) -> np.ndarray:
        from scipy.special import expit, softmax

        scores = self.decision_function(x)
        if len(self.classes_) == 2:
            positive = expit(scores)
            return np.stack([1.0 - positive, positive], axis=1)
        return softmax(-np.logaddexp(0.0, -scores) if self.one_vs_rest_ else scores, axis=1)

    def predict(self, x: Any) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(x), axis=1)]


class MiniRocket(BaseEstimator, TransformerMixin):
    """MiniRocket features of fixed-length series (Dempster, Schmidt, Webb, KDD 2021), written
    from the paper: the 84 kernels of length 9 with weights -1 and 2 (three 2s), dilations
    spaced exponentially up to the series length, biases drawn from quantiles of each
    kernel's output on training series, and the proportion of positive values (PPV) of every
    output as the feature. The series are taken as they are, as in the paper and aeon: their
    level and amplitude are information (z-normalising each one cost PickupGestureWiimoteZ
    0.12 of test accuracy, here and in aeon alike; bench/minirocket_reference.py).

    Rows are the series modality's flat rows, `channels` series laid end to end (set by
    the task from the fold's (series, time, channels) arrays), or such arrays themselves.
    Several channels take the paper's multivariate form (its MiniRocketMultivariate): each
    kernel at each dilation convolves every channel of a random subset of 1 to 9 of them
    and sums the outputs, and the dilations span one channel's length. Laid end to end as
    one long series, kernels spanned channel boundaries, each feature pooled every channel,
    and the transform cost three to five times as much (on MFCCs of spoken digits, 13
    channels: docs/BENCHMARKS.md). One channel is the univariate form, as before.

    Every feature is the PPV of the whole zero-padded output. The paper and aeon take half
    of them from the unpadded part only; that scored 0.007-0.009 lower on all three series
    sets of the suite (docs/BENCHMARKS.md), so it is not done here.

    aeon and sktime ship MiniRocket, but both pin pandas below 3.1 and this stack has 3.1;
    bench/minirocket_reference.py checks this one against aeon's on the same series.
    """

    def __init__(self, features: int = 10_000, max_dilations: int = 32, seed: int = 0,
                 channels: int = 1) -> None:
        self.features = features
        self.max_dilations = max_dilations
        self.seed = seed
        self.channels = channels

    def _series(self, x: Any) -> np.ndarray:
        """(series, channels, time) float64 from flat rows or (series, time, channels)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 3:
            return x.transpose(0, 2, 1)
        rows = x.reshape(len(x), int(np.prod(x.shape[1:])))  # no rows stay no rows
        channels = getattr(self, "channels", 1)  # a model exported before channels existed
        if rows.shape[1] % channels:
            raise ValueError(f"MiniRocket: rows of {rows.shape[1]} values do not split into "
                             f"{channels} channels of equal length")
        return rows.reshape(len(rows), channels, rows.shape[1] // channels)

    @staticmethod
    def kernels() -> list[tuple[int, int, int]]:
        """The positions of the three weights of 2 in each of the 84 kernels."""
        from itertools import combinations

        return list(combinations(range(9), 3))

    @staticmethod
    def _outputs(x: np.ndarray, dilation: int,
                 kernels: list[tuple[int, int, int]] | None = None) -> np.ndarray:
        """(kernels, *x's shape): each kernel's output at one dilation (all 84 unless
        `kernels` names some), zero-padded so that it is as long as the input along x's last
        axis, time (-1 times the sum of the 9 taps plus 3 times the three taps of weight 2)."""
        length = x.shape[-1]
        pad = 4 * dilation
        padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)])
        taps = np.stack([padded[..., i * dilation: i * dilation + length] for i in range(9)])
        total = taps.sum(axis=0)
        return np.stack([3 * (taps[a] + taps[b] + taps[c]) - total
                         for a, b, c in kernels or MiniRocket.kernels()])

    def _plan(self, length: int) -> tuple[np.ndarray, np.ndarray]:
        """(dilations, features per kernel at each): up to `max_dilations` dilations spaced
        exponentially from 1 to (length - 1) / 8, the features shared out among them by how
        many of the spaced values fell on each, the remainder to the smallest."""
        per_kernel = max(1, self.features // 84)
        count = min(per_kernel, self.max_dilations)
        top = np.log2((length - 1) / 8) if length > 9 else 0.0
        dilations, hits = np.unique(np.floor(2 ** np.linspace(0, top, count)).astype(int),
                                    return_counts=True)
        per = (hits * (per_kernel / count)).astype(int)
        for extra in range(per_kernel - int(per.sum())):
            per[extra % len(per)] += 1
        return dilations, per

    def fit(self, x: Any, y: Any = None) -> MiniRocket:
        series = self._series(x)
        channels = series.shape[1]
        dilations, per = self._plan(series.shape[2])
        rng = np.random.default_rng(self.seed)
        # each kernel at each dilation sums a random subset of 1 to 9 channels, of a size
        # drawn log-uniformly as in the paper (from a generator of its own: one channel
        # draws the same biases as before)
        subsets = np.random.default_rng([self.seed, channels])
        most = np.log2(min(channels, 9) + 1)
        # quantiles from a low-discrepancy sequence (the golden ratio), one per feature
        quantiles = (np.arange(1, int(per.sum()) * 84 + 1) * ((np.sqrt(5) + 1) / 2)) % 1
        self.dilations_ = [int(d) for d in dilations]
        self.biases_, self.channels_ = [], []
        position = 0
        for dilation, number in zip(self.dilations_, per, strict=True):
            # each kernel's biases come from its output on one random training series
            picked = series[rng.integers(len(series), size=84)]
            for kernel, weights in enumerate(self.kernels()):
                chosen = [0]
                if channels > 1:
                    chosen = np.sort(subsets.choice(channels, int(2 ** subsets.uniform(0, most)),
                                                    replace=False))
                    self.channels_.append(chosen)
                output = self._outputs(picked[kernel, chosen], dilation, [weights])[0].sum(axis=0)
                self.biases_.append(np.quantile(output, quantiles[position: position + number]))
                position += number
        return self

    #: series transformed at once, a series of several channels counting as that many: the
    #: kernels' outputs at one dilation take 84 x this x length float64s (110 MB for 128
    #: series of 1,460 steps)
    CHUNK: ClassVar[int] = 128

    def transform(self, x: Any) -> np.ndarray:
        series = self._series(x)
        step = max(1, self.CHUNK // series.shape[1])
        return np.concatenate([self._features(series[start: start + step])
                               for start in range(0, max(len(series), 1), step)])

    def _features(self, series: np.ndarray) -> np.ndarray:
        """The PPV of every kernel output at every bias, for a few series: each output row
        sorted once, the values above a bias counted by binary search (what comparing every
        value with every bias counts, without the series x length x biases comparisons)."""
        length = series.shape[2]
        subsets = getattr(self, "channels_", None)
        columns, index = [], 0
        for dilation in self.dilations_:
            outputs = self._outputs(series, dilation)  # (kernels, series, channels, time)
            for kernel in range(84):
                output = (outputs[kernel][:, subsets[index]].sum(axis=1) if subsets
                          else outputs[kernel][:, 0])
                biases = self.biases_[index]
                index += 1
                rows = np.sort(output, axis=1)
                above = [length - np.searchsorted(row, biases, side="right") for row in rows]
                columns.append(np.asarray(above).reshape(len(series), len(biases)) / length)
        return np.concatenate(columns, axis=1).astype(np.float32)


def series_baselines(kind: str, settings: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """Series classification: MiniRocket features into a ridge classifier (the field's strong
    and cheap baseline), 1-NN with Euclidean distance, and a ridge classifier on the values."""
    if kind == REGRESSOR:
        return standard_baselines(kind, settings, seed)
    return {"minirocket_ridge": Pipeline([
                ("features", MiniRocket(seed=seed)), ("scale", StandardScaler()),
                ("model", RidgeClassifierCV(alphas=np.logspace(-3, 3, 10)))]),
            "nn1_euclidean": Pipeline([("model", KNeighborsClassifier(1))]),
            "ridge": Pipeline([("scale", StandardScaler()),
                               ("model", RidgeClassifierCV(alphas=np.logspace(-3, 3, 13)))])}


def _past(x: Any) -> np.ndarray:
    """Forecasting inputs are {"past", "future", "length"} or just the past windows."""
    return x["past"] if isinstance(x, dict) else x


def _observed(x: Any) -> list[np.ndarray]:
    """Each window's observed target values: its series' whole history before it when given
    (`history`, gaps interpolated), else the window with the padding before a short series'
    first value dropped (`length`, the observed steps of each window; all when not given)."""
    histories = x.get("history") if isinstance(x, dict) else None
    if histories is not None:
        return [_filled(history) for history in histories]
    target = np.asarray(_past(x), dtype=np.float64)[:, :, 0]
    lengths = x.get("length") if isinstance(x, dict) else None
    if lengths is None:
        return list(target)
    return [row[len(row) - int(n):] for row, n in zip(target, lengths, strict=True)]


def _filled(values: np.ndarray) -> np.ndarray:
    """A history with its gaps interpolated (the ends held at the nearest value)."""
    values = np.asarray(values, dtype=np.float64)
    missing = np.isnan(values)
    if not missing.any():
        return values
    if missing.all():
        return np.zeros(max(len(values), 1))
    steps = np.arange(len(values))
    return np.interp(steps, steps[~missing], values[~missing])


class SeasonalNaive(BaseEstimator, RegressorMixin):
    """Repeat the last `season` observed target values over the horizon (nothing to fit); a
    window with less than a season observed repeats its last value."""

    def __init__(self, season: int = 1, horizon: int = 1) -> None:
        self.season = season
        self.horizon = horizon

    def fit(self, x: np.ndarray, y: np.ndarray | None = None) -> SeasonalNaive:
        self.fitted_ = True
        return self

    def partial_fit(self, x: np.ndarray, y: np.ndarray | None = None) -> SeasonalNaive:
        """Nothing to learn from training windows (each forecast fits its own history)."""
        return self.fit(x, y)

    def _one(self, values: np.ndarray) -> np.ndarray:
        season = self.season if len(values) >= self.season else 1
        return values[-season:][np.arange(self.horizon) % season]

    def predict(self, x: Any) -> np.ndarray:
        rows = _observed(x)
        return np.stack([self._one(row) for row in rows]) if rows else \
            np.empty((0, self.horizon))


class LagRidge(BaseEstimator, RegressorMixin):
    """Ridge on lag features relative to the last observed value, predicting the whole horizon.

    Inputs are the window's past channels (target first) and any known-future covariates;
    working relative to the last value lets one linear model follow a trend or level shift.
    Features are standardised, the penalty is chosen among `ALPHAS` by generalised
    cross-validation (Golub, Heath and Wahba 1979), one for the whole horizon. Everything is
    computed from the windows' means and centred cross-products, which `partial_fit` merges
    chunk by chunk (Chan, Golub and LeVeque's pairwise update): fitting holds one chunk of
    windows, whatever the number of series, and chunks give the model one pass would.
    """

    ALPHAS = np.logspace(-3, 3, 13)

    def __init__(self, lags: int | None = None) -> None:
        self.lags = lags

    def _features(self, x: Any) -> tuple[np.ndarray, np.ndarray]:
        past = np.asarray(_past(x), dtype=np.float64)
        lags = past.shape[1] if not self.lags else min(self.lags, past.shape[1])
        last = past[:, -1:, 0]
        columns = [past[:, -lags:, 0] - last, past[:, -lags:, 1:].reshape(len(past), -1)]
        if isinstance(x, dict) and x.get("future") is not None:
            columns.append(np.asarray(x["future"], dtype=np.float64).reshape(len(past), -1))
        return np.concatenate(columns, axis=1), last

    def fit(self, x: Any, y: np.ndarray) -> LagRidge:
        for name in ("count_", "mean_", "products_"):
            self.__dict__.pop(name, None)
        return self.partial_fit(x, y)

    def partial_fit(self, x: Any, y: np.ndarray) -> LagRidge:
        """Add a chunk of windows to the statistics and solve again."""
        features, last = self._features(x)
        data = np.concatenate([features, np.asarray(y, dtype=np.float64).reshape(len(last), -1)
                               - last], axis=1)
        count, mean = len(data), data.mean(axis=0)
        centred = data - mean
        products = centred.T @ centred
        if getattr(self, "count_", 0):
            total = self.count_ + count
            delta = mean - self.mean_
            products += self.products_ + np.outer(delta, delta) * (self.count_ * count / total)
            mean = self.mean_ + delta * (count / total)
            count = total
        self.count_, self.mean_, self.products_ = count, mean, products
        self.n_features_in_ = features.shape[1]
        return self._solve()

    def _solve(self) -> LagRidge:
        p, n = self.n_features_in_, self.count_
        spread = np.sqrt(np.diag(self.products_)[:p] / n)
        spread[spread < 1e-12 * max(1.0, float(np.abs(self.mean_[:p]).max(initial=0)))] = 1.0
        gram = self.products_[:p, :p] / np.outer(spread, spread)  # standardised X'X
        cross = self.products_[:p, p:] / spread[:, None]  # standardised X'y, per horizon step
        squares = np.diag(self.products_)[p:]
        values, vectors = np.linalg.eigh(gram)
        values = np.clip(values, 0.0, None)
        rotated = vectors.T @ cross
        best = None
        for alpha in self.ALPHAS:
            shrink = 1.0 / (values + alpha)
            # residual sum of squares of every horizon step, from the statistics alone
            kept = 2 * shrink - values * shrink ** 2
            rss = float(np.sum(squares) - np.sum(rotated ** 2 * kept[:, None]))
            freedom = float(np.sum(values * shrink)) + 1.0  # and the intercept
            gcv = max(rss, 0.0) / (n * max(1.0 - freedom / n, 1e-12) ** 2)
            if best is None or gcv < best[0]:
                best = (gcv, alpha, vectors @ (rotated * shrink[:, None]))
        _, self.alpha_, coef = best
        self.coef_ = coef / spread[:, None]  # on raw features
        self.intercept_ = self.mean_[p:] - self.mean_[:p] @ self.coef_
        return self

    def predict(self, x: Any) -> np.ndarray:
        features, last = self._features(x)
        return features @ self.coef_ + self.intercept_ + last


class Naive(SeasonalNaive):
    """The last observed value, repeated over the horizon (the random-walk forecast)."""

    def _one(self, values: np.ndarray) -> np.ndarray:
        return np.repeat(values[-1], self.horizon)


class Drift(SeasonalNaive):
    """The last value plus the window's average change per step, carried on (Hyndman and
    Athanasopoulos, "Forecasting: principles and practice", the drift method)."""

    def _one(self, values: np.ndarray) -> np.ndarray:
        slope = (values[-1] - values[0]) / max(len(values) - 1, 1)
        return values[-1] + slope * np.arange(1, self.horizon + 1)


class Theta(SeasonalNaive):
    """The Theta method (Assimakopoulos and Nikolopoulos 2000; Hyndman and Billah's
    formulation in statsmodels' ThetaModel), fitted on each window's past: seasonally
    adjusted (multiplicatively when the window stays positive), then simple exponential
    smoothing with half the linear trend. The M4's Theta benchmark tests for seasonality
    first; that test needs three seasons (with two it rejected the clear yearly cycle of the
    Mauna Loa CO2, MASE 2.4-3.1 against 0.3-1.0 adjusted), so a window of two seasons is
    adjusted without it, one of three or more after it, a shorter one not at all."""

    def _one(self, values: np.ndarray) -> np.ndarray:
        import warnings

        from statsmodels.tsa.forecasting.theta import ThetaModel

        if len(values) < 3:
            return np.repeat(values[-1], self.horizon)
        season = self.season if self.season > 1 and len(values) >= 2 * self.season else 1
        positive = bool(np.all(values > 0))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = ThetaModel(values, period=season, deseasonalize=season > 1,
                                   use_test=len(values) >= 3 * season,
                                   method="multiplicative" if positive else "additive")
                return np.asarray(model.fit().forecast(self.horizon), dtype=np.float64)
        except (ValueError, IndexError, np.linalg.LinAlgError):  # constant or too short
            return np.repeat(values[-1], self.horizon)


def seasonal_factors(values: np.ndarray, season: int, horizon: int
                     ) -> tuple[np.ndarray, np.ndarray, bool] | None:
    """Classical decomposition as the M4's benchmarks use it: when a window of three or more
    seasons passes the 90 % autocorrelation test at the seasonal lag (two seasons are adjusted
    without it, as `Theta` does), its seasonal factors over the window and the horizon and
    whether they multiply (a positive window) or add; None when nothing is adjusted."""
    from statsmodels.tsa.seasonal import seasonal_decompose
    from statsmodels.tsa.stattools import acf

    n = len(values)
    if season <= 1 or n < 2 * season or np.ptp(values) == 0:
        return None
    if n >= 3 * season:
        correlations = acf(values, nlags=season, fft=False)
        limit = 1.645 * np.sqrt((1 + 2 * np.sum(correlations[1:season] ** 2)) / n)
        if not abs(correlations[season]) > limit:
            return None
    multiplicative = bool(np.all(values > 0))
    seasonal = seasonal_decompose(values, model="multiplicative" if multiplicative else "additive",
                                  period=season).seasonal
    ahead = seasonal[n - season + np.arange(horizon) % season]
    return seasonal, ahead, multiplicative


def deseasonalised(values: np.ndarray, factors: tuple | None) -> np.ndarray:
    """`values` with `seasonal_factors`' seasonal part taken out (as they are without one)."""
    if factors is None:
        return values
    seasonal, _, multiplicative = factors
    return values / seasonal if multiplicative else values - seasonal


def reseasonalised(forecast: np.ndarray, factors: tuple | None) -> np.ndarray:
    """A forecast of the adjusted series with the seasonal part of the horizon put back."""
    if factors is None:
        return forecast
    _, ahead, multiplicative = factors
    return forecast * ahead if multiplicative else forecast + ahead


class Naive2(SeasonalNaive):
    """The M4's Naive2 benchmark: the last value of the seasonally adjusted series
    (`seasonal_factors`), seasonalised again over the horizon; naive where nothing is
    adjusted. The reference the M4 scores its OWA against."""

    def _one(self, values: np.ndarray) -> np.ndarray:
        factors = seasonal_factors(values, self.season, self.horizon)
        adjusted = deseasonalised(values, factors)
        return reseasonalised(np.repeat(adjusted[-1], self.horizon), factors)


class ETS(SeasonalNaive):
    """Exponential smoothing as the M4's SES / Holt / Damped benchmarks and the ETS of
    Hyndman et al. (2002) choose it, fitted on each window's past: seasonally adjusted
    (`seasonal_factors`), then the additive-error model with no trend, a trend or a damped
    trend whose AICc is lowest (statsmodels' ETSModel), its forecast seasonalised again."""

    def _one(self, values: np.ndarray) -> np.ndarray:
        import warnings

        from statsmodels.tsa.exponential_smoothing.ets import ETSModel

        factors = seasonal_factors(values, self.season, self.horizon)
        adjusted = deseasonalised(values, factors)
        best, best_aicc = np.repeat(adjusted[-1], self.horizon), np.inf
        if len(values) >= 3 and np.ptp(adjusted) > 0:
            for trend, damped in ((None, False), ("add", False), ("add", True)):
                if trend and len(values) < 5:
                    continue  # a trend of fewer points than its parameters is not estimable
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        fit = ETSModel(adjusted, error="add", trend=trend,
                                       damped_trend=damped).fit(disp=False)
                        forecast = np.asarray(fit.forecast(self.horizon), dtype=np.float64)
                except (ValueError, np.linalg.LinAlgError):
                    continue
                if np.isfinite(fit.aicc) and fit.aicc < best_aicc and np.isfinite(forecast).all():
                    best, best_aicc = forecast, fit.aicc
        return reseasonalised(best, factors)


def forecasting_baselines(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The field's statistical benchmarks, each fitted on a window's series history before
    it (naive, the M4's Naive2, seasonal naive, drift, Theta, ETS; season and horizon are set
    when fitted), and ridge on lags, one model across windows."""
    return {"naive": Naive(), "naive2": Naive2(), "seasonal_naive": SeasonalNaive(),
            "drift": Drift(), "theta": Theta(), "ets": ETS(),
            "ridge_lags": LagRidge(settings.get("lags"))}
