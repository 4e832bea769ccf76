"""Market references: the opening and closing lines as probabilities, with fallbacks."""

from __future__ import annotations

import pytest

from models import catalog
from models.base import BASE_RATES

OPEN = {"open_p_H": 0.5, "open_p_D": 0.3, "open_p_A": 0.2}
CLOSE = {"close_p_H": 0.6, "close_p_D": 0.25, "close_p_A": 0.15}


def test_market_open_reads_the_opening_line() -> None:
    """market-open answers the opening implied probabilities and ignores the closing ones."""
    model = catalog.create("market-open")
    assert model.predict_proba_one(OPEN | CLOSE) == pytest.approx({"H": 0.5, "D": 0.3, "A": 0.2})


def test_market_close_falls_back_to_the_opening_line() -> None:
    """market-close answers the closing line, the opening one when the closing is incomplete."""
    model = catalog.create("market-close")
    assert model.predict_proba_one(OPEN | CLOSE) == pytest.approx({"H": 0.6, "D": 0.25, "A": 0.15})
    partial = OPEN | {"close_p_H": 0.6, "close_p_D": 0.25}
    assert model.predict_proba_one(partial) == pytest.approx({"H": 0.5, "D": 0.3, "A": 0.2})


def test_market_without_odds_answers_the_base_rates() -> None:
    """With no usable line at all (missing, zero), a reference answers the base rates."""
    for model_id in catalog.REFERENCE_MODEL_IDS:
        model = catalog.create(model_id)
        assert model.predict_proba_one({}) == pytest.approx(BASE_RATES)
        assert model.predict_proba_one(dict.fromkeys(OPEN, 0.0)) == pytest.approx(BASE_RATES)


def test_market_references_never_learn() -> None:
    """References are kind `market`, do not learn online and ignore results."""
    for model_id in catalog.REFERENCE_MODEL_IDS:
        model = catalog.create(model_id)
        assert (model.kind, model.learns_online) == ("market", False)
        state = model.snapshot()
        model.learn_one(OPEN | CLOSE, "A")
        assert model.snapshot() == state
