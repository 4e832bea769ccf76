"""Every model tipstream can run, by id, and the kinds a stored state is restored as.

Input sets were chosen by prequential log loss over the 27,700 matches of ``shared/data``
(predict, then learn every result): each feature beyond the ratings and the opening line cost
the online learners a little (their step noise grows with the number of weights), so the
default ids read a compact set and ``online-logreg-full`` keeps the whole table for comparison.
No learnable model reads a ``close_*`` input: the closing line is known only at kickoff.

>>> model = create("online-logreg")
>>> model.kind, model.learns_online, "close_p_H" in model.inputs
('softmax', True, False)
>>> restore(model.kind, model.snapshot()).predict_proba_one({}) == model.predict_proba_one({})
True
"""

from __future__ import annotations

from collections.abc import Callable

from models.base import BaseModel, Model
from models.batch import BatchModel
from models.features import FEATURE_NAMES
from models.market import MarketModel
from models.online import AdaptiveForest, OrderedLogit, SoftmaxRegression

ODDS_INPUTS: tuple[str, ...] = ("open_p_H", "open_p_D", "open_p_A", "open_margin")
"""Features that come from the opening odds."""
RATINGS: tuple[str, ...] = ("elo_diff", "pi_exp_gd")
"""The two ratings that carry most of what earlier results say (Elo and pi-ratings)."""
EXPECTED_GOALS: tuple[str, ...] = ("goals_exp_home", "goals_exp_away")
OPENING_LINE: tuple[str, ...] = ("open_p_H", "open_p_D", "open_p_A")
NO_ODDS_INPUTS = tuple(name for name in FEATURE_NAMES if name not in ODDS_INPUTS)

_FACTORIES: dict[str, Callable[[int], Model]] = {
    # Prequential log loss on shared/data (opening line 0.9740, closing 0.9671): 0.9756.
    "online-logreg": lambda seed: SoftmaxRegression(
        "online-logreg", (*RATINGS, *OPENING_LINE), lr=0.001
    ),
    # 0.9871
    "online-logreg-noodds": lambda seed: SoftmaxRegression(
        "online-logreg-noodds", RATINGS, lr=0.001
    ),
    # 0.9784: every feature; a smaller step, since 28 weights per class are noisier.
    "online-logreg-full": lambda seed: SoftmaxRegression(
        "online-logreg-full", FEATURE_NAMES, lr=0.0003
    ),
    # 0.9863
    "online-rating": lambda seed: OrderedLogit("online-rating", RATINGS, lr=0.002),
    # 0.9760
    "online-rating-odds": lambda seed: OrderedLogit(
        "online-rating-odds", (*RATINGS, "open_p_H", "open_p_A"), lr=0.002
    ),
    # 0.9803 (River's default forest: 0.9880 here, 0.9928 on every feature).
    "online-arf": lambda seed: AdaptiveForest(
        "online-arf", (*RATINGS, *EXPECTED_GOALS, *ODDS_INPUTS), seed=seed
    ),
    # 0.9936
    "online-arf-noodds": lambda seed: AdaptiveForest(
        "online-arf-noodds", (*RATINGS, *EXPECTED_GOALS), seed=seed
    ),
    "batch-logreg": lambda seed: BatchModel("batch-logreg", FEATURE_NAMES, seed=seed),
    "batch-logreg-noodds": lambda seed: BatchModel(
        "batch-logreg-noodds", NO_ODDS_INPUTS, seed=seed
    ),
    "batch-forest": lambda seed: BatchModel(
        "batch-forest", FEATURE_NAMES, estimator="forest", seed=seed
    ),
    "market-open": lambda seed: MarketModel.opening(),
    "market-close": lambda seed: MarketModel.closing(),
}

ONLINE_MODEL_IDS: tuple[str, ...] = tuple(i for i in _FACTORIES if i.startswith("online-"))
BATCH_MODEL_IDS: tuple[str, ...] = tuple(i for i in _FACTORIES if i.startswith("batch-"))
REFERENCE_MODEL_IDS: tuple[str, ...] = ("market-open", "market-close")
MODEL_IDS: tuple[str, ...] = tuple(_FACTORIES)

DEFAULT_MODEL_ID = "online-logreg"
DEFAULT_POLICY = "all"
"""Text form of the default ``LearningPolicy`` (``models.policy.parse``). Measured prequentially
on the 27,700 shared matches (docs/MODELS.md), learning from every result beats the earlier
pipeline's errors-only rule by a wide margin (online-logreg: 0.9756 against 1.0873 log loss;
errors-only is worse than the base rates, because a model that sees only its misses learns a
biased picture of the outcomes). ``errors`` and ``errors:0.7`` stay available."""

_KINDS: dict[str, type[BaseModel]] = {
    cls.kind: cls
    for cls in (SoftmaxRegression, OrderedLogit, AdaptiveForest, BatchModel, MarketModel)
}
KINDS: tuple[str, ...] = tuple(_KINDS)


def create(model_id: str, *, seed: int = 0) -> Model:
    """A fresh model (version 0) of a catalog id; the seed matters only to randomised ones."""
    factory = _FACTORIES.get(model_id)
    if factory is None:
        raise ValueError(f"unknown model id {model_id!r}; known: {', '.join(MODEL_IDS)}")
    return factory(seed)


def restore(kind: str, data: bytes) -> Model:
    """The model a (verified) snapshot of ``kind`` describes, with its id, inputs and version."""
    cls = _KINDS.get(kind)
    if cls is None:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(KINDS)}")
    return cls.restore(data)
