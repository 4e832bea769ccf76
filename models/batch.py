"""Batch scikit-learn models, trained offline on a table of past matches (the batch set-up).

``fit(rows, outcomes)`` scores the estimator by 5-fold cross-validation, then trains it on all
rows. The folds are forward-chaining (``TimeSeriesSplit``): each fold trains on the matches
before its test block, because shuffled k-fold (what a batch pipeline often runs) lets a model
learn from matches played after the ones it is scored on, which flatters it. Rows must come in
kickoff order for that to hold.

``refit(rows, outcomes)`` trains on every row without cross-validating: for scheduled
retraining (``tipstream evaluate`` refits each season), where a CV score would be computed and
never read, at the cost of 5 more fits (the forest: 4 more, for its calibration folds).

Between fits the model does not learn: ``learn_one`` is a no-op and ``learns_online`` is false;
retraining (e.g. each season) is a new ``fit`` and a new version. Before its first fit it
predicts the base rates.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass, field
from typing import Any, Literal, Self

import numpy as np
from sklearn.base import ClassifierMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import TimeSeriesSplit
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from models.base import (
    BASE_RATES,
    OUTCOME_INDEX,
    BaseModel,
    FloatArray,
    distributions,
    floats,
)
from schemas.events import OUTCOMES, Outcome

Estimator = Literal["logreg", "forest", "boosting"]


def _estimator(name: Estimator, seed: int) -> ClassifierMixin:
    if name == "logreg":
        # Fitted by maximum likelihood, so already calibrated; C=1 on standardised inputs.
        # Newton-CG: the inputs are collinear (Elo home/away/diff, implied probabilities summing
        # to one), where lbfgs needed ~80 slow iterations: 131 s for 5 folds + the final fit on
        # 21,736 matches here, against 1.0 s for the same cross-validated log loss (0.9723).
        solver = LogisticRegression(C=1.0, solver="newton-cg", max_iter=200)
        return make_pipeline(StandardScaler(), solver)
    if name == "boosting":
        # Histogram gradient boosting on the log loss: 100 shallow trees (depth 3, leaves of
        # >= 50 matches), a small step and L2 5, so it is fitted by likelihood and needs no
        # calibration (with step 0.05 and L2 1 it overfitted 600 matches: CV 1.119 > ln 3).
        # No early stopping: its validation split would be a random one, not the last matches.
        return HistGradientBoostingClassifier(
            learning_rate=0.03, max_iter=100, max_depth=3, min_samples_leaf=50,
            l2_regularization=5.0, early_stopping=False, random_state=seed,
        )  # fmt: skip
    # Leaves of >= 50 matches keep the votes from being overconfident; Platt scaling fitted on
    # 3 internal folds fixes what remains. One forest, not one per fold (ensemble=False): a
    # single-match prediction through scikit-learn already costs ~10 ms per forest. 50 trees on
    # half-size bootstrap samples: 4.4 s to fit 20,000 matches here against 15 s for 100 trees
    # on full samples, so that a refit every season fits in the evaluator's 10 minutes.
    trees = RandomForestClassifier(
        n_estimators=50, max_samples=0.5, min_samples_leaf=50, max_features="sqrt",
        random_state=seed, n_jobs=1,
    )  # fmt: skip
    return CalibratedClassifierCV(trees, method="sigmoid", cv=3, ensemble=False)


@dataclass(frozen=True)
class FitReport:
    """What a fit measured: cross-validated log loss per fold and overall."""

    rows: int
    cv_log_loss: float
    fold_log_losses: tuple[float, ...] = field(default_factory=tuple)


class BatchModel(BaseModel):
    """A scikit-learn classifier behind the model interface, refitted offline only."""

    kind = "sklearn"

    def __init__(self, model_id: str, inputs: Sequence[str], *, estimator: Estimator = "logreg",
                 seed: int = 0) -> None:  # fmt: skip
        super().__init__(model_id, inputs)
        self.estimator: Estimator = estimator
        self.seed = seed
        self.fitted: Any = None
        # Missing inputs are imputed with the training means, as the online models do.
        self.fill_values = np.zeros(len(self.inputs))
        self.report: FitReport | None = None

    def fit(
        self, rows: Sequence[Mapping[str, float]], outcomes: Sequence[Outcome], *, folds: int = 5
    ) -> FitReport:
        """Cross-validate (forward-chaining folds; none if ``folds`` is 0), then train on every
        row. Without folds the report's CV log loss is NaN."""
        if len(rows) != len(outcomes):
            raise ValueError(f"{len(rows)} rows but {len(outcomes)} outcomes")
        if len(rows) <= max(folds, 1):
            raise ValueError(f"need more than {max(folds, 1)} rows to fit, got {len(rows)}")
        # One OpenMP thread (scikit-learn's own dependency limits it): histogram boosting's
        # threads spin-wait on a busy machine, 2.5x slower on 600 matches with 2 cores idle
        # and past a 300 s test timeout on 2 cores shared with other jobs.
        with threadpool_limits(limits=1, user_api="openmp"):
            return self._fit(rows, outcomes, folds)

    def _fit(self, rows: Sequence[Mapping[str, float]], outcomes: Sequence[Outcome], folds: int
             ) -> FitReport:  # fmt: skip
        matrix = self.matrix(rows)
        seen = np.isfinite(matrix)
        counts = seen.sum(axis=0)
        self.fill_values = np.where(seen, matrix, 0.0).sum(axis=0) / np.maximum(counts, 1)
        features = np.where(seen, matrix, self.fill_values)
        labels = np.array([OUTCOME_INDEX[outcome] for outcome in outcomes])
        splits = TimeSeriesSplit(n_splits=folds).split(features) if folds else ()
        fold_losses = tuple(
            _log_loss(clone(_estimator(self.estimator, self.seed)), features, labels, train, test)
            for train, test in splits
        )
        self.fitted = _estimator(self.estimator, self.seed).fit(features, labels)
        cv_loss = float(np.mean(fold_losses)) if fold_losses else math.nan
        self.report = FitReport(len(rows), cv_loss, fold_losses)
        return self.report

    def refit(self, rows: Sequence[Mapping[str, float]], outcomes: Sequence[Outcome]) -> FitReport:
        """Train on every row without cross-validation (scheduled retraining)."""
        return self.fit(rows, outcomes, folds=0)

    def _proba(self, matrix: FloatArray) -> FloatArray:
        if self.fitted is None:
            return np.tile(np.array(list(BASE_RATES.values())), (len(matrix), 1))
        return _aligned(self.fitted, np.where(np.isfinite(matrix), matrix, self.fill_values))

    def _state(self) -> dict[str, Any]:
        report = None if self.report is None else astuple(self.report)
        return {
            "estimator": self.estimator,
            "seed": self.seed,
            "fill_values": self.fill_values.tolist(),
            "report": report,
            "pickle": pickle.dumps(self.fitted),
        }

    @classmethod
    def _from_state(cls, model_id: str, inputs: tuple[str, ...], state: dict[str, Any]) -> Self:
        model = cls(model_id, inputs, estimator=state["estimator"], seed=state["seed"])
        model.fill_values = floats(state["fill_values"])
        if state["report"] is not None:
            rows, loss, fold_losses = state["report"]
            model.report = FitReport(rows, loss, tuple(fold_losses))
        # Only signed state reaches a restore (models.serialization), so this is our own pickle.
        model.fitted = pickle.loads(state["pickle"])  # noqa: S301
        return model


def _aligned(estimator: Any, features: FloatArray) -> FloatArray:
    """Probabilities in H, D, A columns, zero for a class the training rows never had."""
    if isinstance(estimator, Pipeline) and len(estimator.classes_) == len(OUTCOMES):
        # scikit-learn's input checks cost ~0.7 ms a call; the scorer calls once per match.
        scaler, linear = estimator[0], estimator[-1]
        scores = (features - scaler.mean_) / scaler.scale_ @ linear.coef_.T + linear.intercept_
        exp = np.exp(scores - scores.max(axis=1, keepdims=True))
        return np.asarray(exp / exp.sum(axis=1, keepdims=True), dtype=np.float64)
    result = np.zeros((len(features), len(OUTCOMES)))
    result[:, estimator.classes_] = estimator.predict_proba(features)
    return result


def _log_loss(estimator: Any, features: FloatArray, labels: Any, train: Any, test: Any) -> float:
    estimator.fit(features[train], labels[train])
    probabilities = distributions(_aligned(estimator, features[test]))
    return float(-np.mean(np.log(probabilities[np.arange(len(test)), labels[test]])))
