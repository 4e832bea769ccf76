"""Synthetic model inputs with the real feature names and plausible values, for model tests.

A hidden strength gap drives the ratings, the odds and the outcome together, so a model that
learns has something to find; every key of ``FEATURE_NAMES`` and ``CLOSE_INPUTS`` is present.
"""

from __future__ import annotations

import math
import random

from models.features import CLOSE_INPUTS, FEATURE_NAMES
from schemas.events import OUTCOMES, Outcome


def _implied(strength: float, rng: random.Random) -> tuple[float, float, float]:
    scores = (0.25 + strength + rng.gauss(0, 0.1), 0.0, -strength + rng.gauss(0, 0.1))
    exp = [math.exp(s) for s in scores]
    return exp[0] / sum(exp), exp[1] / sum(exp), exp[2] / sum(exp)


def match(rng: random.Random) -> tuple[dict[str, float], Outcome]:
    """One match's inputs and its outcome."""
    strength = rng.gauss(0.0, 0.7)
    elo_diff = 150.0 * strength + rng.gauss(0, 30)
    x = {name: rng.uniform(0.5, 2.5) for name in FEATURE_NAMES}
    opening = _implied(strength, rng)
    closing = _implied(strength, rng)
    x.update(
        elo_home=1500.0 + elo_diff / 2,
        elo_away=1500.0 - elo_diff / 2,
        elo_diff=elo_diff,
        elo_p_home=1.0 / (1.0 + 10.0 ** (-(elo_diff + 60.0) / 400.0)),
        pi_home=0.4 * strength,
        pi_away=-0.4 * strength,
        pi_exp_gd=0.8 * strength + rng.gauss(0, 0.2),
        rest_home=rng.uniform(3, 30),
        rest_away=rng.uniform(3, 30),
        open_p_H=opening[0],
        open_p_D=opening[1],
        open_p_A=opening[2],
        open_margin=rng.uniform(0.03, 0.1),
    )
    x.update(zip(CLOSE_INPUTS, closing, strict=True))
    outcome = rng.choices(OUTCOMES, weights=_implied(strength, rng))[0]
    return {name: x[name] for name in (*FEATURE_NAMES, *CLOSE_INPUTS)}, outcome


def stream(n: int, seed: int = 7) -> list[tuple[dict[str, float], Outcome]]:
    """``n`` independent matches, the same for the same seed."""
    rng = random.Random(seed)
    return [match(rng) for _ in range(n)]
