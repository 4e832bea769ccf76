"""Every model tipstream can run, by id, and the kinds a stored state is restored as.

Input sets were chosen by prequential log loss over the 27,700 matches of ``data/football``
(predict, then learn every result; docs/MODELS.md has the table and the command): each feature
beyond the ratings and the opening line cost the online learners a little (their step noise
grows with the number of weights), so the default ids read a compact set and
``online-logreg-full`` keeps the whole table for comparison. No learnable model reads a
``close_*`` input: the closing line is known only at kickoff.

The default, ``online-logreg``, is River's softmax regression started *at* the opening line
(its log-probabilities enter through an identity matrix) and corrected by two ratings;
``online-logreg-numpy`` is the same model hand-rolled in numpy, which scores the same.

>>> model = create("online-logreg")
>>> model.kind, model.learns_online, "close_p_H" in model.inputs
('river-softmax', True, False)
>>> restore(model.kind, model.snapshot()).predict_proba_one({}) == model.predict_proba_one({})
True
"""

from __future__ import annotations

from collections.abc import Callable

from models.base import BaseModel, Model
from models.batch import BatchModel
from models.ensemble import Ensemble
from models.features import FEATURE_NAMES
from models.incident import IncidentModel
from models.market import MarketModel
from models.online import AdaptiveForest, OrderedLogit, RiverSoftmax, SoftmaxRegression

ODDS_INPUTS: tuple[str, ...] = ("open_p_H", "open_p_D", "open_p_A", "open_margin")
"""Features that come from the opening odds."""
RATINGS: tuple[str, ...] = ("elo_diff", "pi_exp_gd")
"""The two ratings that carry most of what earlier results say (Elo and pi-ratings)."""
EXPECTED_GOALS: tuple[str, ...] = ("goals_exp_home", "goals_exp_away")
OPENING_LINE: tuple[str, ...] = ("open_p_H", "open_p_D", "open_p_A")
NO_ODDS_INPUTS = tuple(name for name in FEATURE_NAMES if name not in ODDS_INPUTS)

# Figures: prequential log loss on the shared data's scoring subset (25,881 matches after each
# league's first season; opening line 0.9742, closing 0.9670 on them), policy `all`.
_FACTORIES: dict[str, Callable[[int], Model]] = {
    # 0.9735. A small step: the model starts at the market and only needs small corrections.
    "online-logreg": lambda seed: RiverSoftmax(
        "online-logreg", RATINGS, prior=OPENING_LINE, lr=1e-4, seed=seed
    ),
    # 0.9735: the same model in numpy.
    "online-logreg-numpy": lambda seed: SoftmaxRegression(
        "online-logreg-numpy", RATINGS, prior=OPENING_LINE, lr=1e-4
    ),
    # 0.9851
    "online-logreg-noodds": lambda seed: RiverSoftmax(
        "online-logreg-noodds", RATINGS, lr=0.001, seed=seed
    ),
    # 0.9771 on all features (no prior); a smaller step, since 28 weights per class are noisier.
    "online-logreg-full": lambda seed: SoftmaxRegression(
        "online-logreg-full", FEATURE_NAMES, lr=0.0003
    ),
    # 0.9843: the best model without odds (RPS 0.2000).
    "online-rating": lambda seed: OrderedLogit("online-rating", RATINGS, lr=0.002),
    # 0.9752
    "online-rating-odds": lambda seed: OrderedLogit(
        "online-rating-odds", (*RATINGS, "open_p_H", "open_p_A"), lr=0.002
    ),
    # 0.9793 (River's default forest: 0.9880 on all 27,700, 0.9928 on every feature).
    "online-arf": lambda seed: AdaptiveForest(
        "online-arf", (*RATINGS, *EXPECTED_GOALS, *ODDS_INPUTS), seed=seed
    ),
    # 0.9921
    "online-arf-noodds": lambda seed: AdaptiveForest(
        "online-arf-noodds", (*RATINGS, *EXPECTED_GOALS), seed=seed
    ),
    # The online models that read the opening line, and the best one without it, mixed by
    # weights learned from their discounted log loss (models.ensemble).
    "online-ensemble": lambda seed: Ensemble(
        "online-ensemble", [create(member, seed=seed) for member in ENSEMBLE_MEMBERS]
    ),
    # Refitted at each season start: 0.9776, without odds 0.9885, forest 0.9788.
    "batch-logreg": lambda seed: BatchModel("batch-logreg", FEATURE_NAMES, seed=seed),
    "batch-logreg-noodds": lambda seed: BatchModel(
        "batch-logreg-noodds", NO_ODDS_INPUTS, seed=seed
    ),
    "batch-forest": lambda seed: BatchModel(
        "batch-forest", FEATURE_NAMES, estimator="forest", seed=seed
    ),
    "batch-boosting": lambda seed: BatchModel(
        "batch-boosting", FEATURE_NAMES, estimator="boosting", seed=seed
    ),
    "market-open": lambda seed: MarketModel.opening(),
    "market-close": lambda seed: MarketModel.closing(),
    # Not a model to deploy: `make demo`'s scripted incident (models.incident), the champion's
    # model with its inputs mirrored over a stretch of the stream.
    "demo-incident": lambda seed: incident(*DEMO_INCIDENT, seed=seed),
}

ENSEMBLE_MEMBERS: tuple[str, ...] = (
    "online-logreg",
    "online-rating-odds",
    "online-logreg-full",
    "online-arf",
    "online-rating",
)
"""What ``online-ensemble`` mixes: every online model that reads the opening line, and the
best without it (its errors are the least correlated with the line's)."""

DEMO_INCIDENT: tuple[int, int] = (2175, 2341)
"""The examples learned before 2022-10-01 and 2022-10-22 in `make demo`'s default window (the
demo computes the range of its own window and registers that): three weeks of broken inputs."""
INCIDENT_WRAPS = "online-logreg"
"""The model the demo's incident breaks: the champion's, so the two predict alike outside it."""
INCIDENT_MODEL_ID = "demo-incident"
DEMO_MODEL_IDS: tuple[str, ...] = (INCIDENT_MODEL_ID,)
"""Ids that exist for the demo only: not candidates for ``evaluate --models all``."""

ONLINE_MODEL_IDS: tuple[str, ...] = tuple(i for i in _FACTORIES if i.startswith("online-"))
BATCH_MODEL_IDS: tuple[str, ...] = tuple(i for i in _FACTORIES if i.startswith("batch-"))
REFERENCE_MODEL_IDS: tuple[str, ...] = ("market-open", "market-close")
MODEL_IDS: tuple[str, ...] = tuple(_FACTORIES)

DEFAULT_MODEL_ID = "online-logreg"
DEFAULT_POLICY = "all"
"""Text form of the default ``LearningPolicy`` (``models.policy.parse``). Measured prequentially
on the 27,700 matches (docs/MODELS.md), learning from every result beats learning from errors
only (the rule of the batch pipeline tipstream replaced): online-logreg scores 0.9735 with
``all``, 0.9769 with ``errors:0.7``, 0.9854 with ``weighted`` and 1.0513 with ``errors`` (worse
than the base rates, 1.0672: a model that sees only its misses learns a biased picture of the
outcomes). ``errors`` and ``errors:0.7`` stay
available."""

_KINDS: dict[str, type[BaseModel]] = {
    cls.kind: cls
    for cls in (
        RiverSoftmax,
        SoftmaxRegression,
        OrderedLogit,
        AdaptiveForest,
        BatchModel,
        MarketModel,
        Ensemble,
        IncidentModel,
    )
}
KINDS: tuple[str, ...] = tuple(_KINDS)
ONLINE_KINDS: tuple[str, ...] = tuple(k for k, cls in _KINDS.items() if cls.learns_online)
"""Kinds whose versions are one learning lineage (each the previous plus what it learned since),
not separate fits: the promotion gate judges such a model on all its versions since its last
rollback in time, a batch model on its latest fit only."""


def create(model_id: str, *, seed: int = 0) -> Model:
    """A fresh model (version 0) of a catalog id; the seed matters only to randomised ones."""
    factory = _FACTORIES.get(model_id)
    if factory is None:
        raise ValueError(f"unknown model id {model_id!r}; known: {', '.join(MODEL_IDS)}")
    return factory(seed)


def incident(start: int, end: int, *, seed: int = 0) -> IncidentModel:
    """``demo-incident``: :data:`INCIDENT_WRAPS` with its inputs mirrored while it has learned
    ``start`` to ``end - 1`` examples."""
    inner = create(INCIDENT_WRAPS, seed=seed)
    return IncidentModel(INCIDENT_MODEL_ID, inner, start=start, end=end)


def restore(kind: str, data: bytes) -> Model:
    """The model a (verified) snapshot of ``kind`` describes, with its id, inputs and version."""
    cls = _KINDS.get(kind)
    if cls is None:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(KINDS)}")
    return cls.restore(data)
