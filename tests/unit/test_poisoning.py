"""One hostile input cannot poison a learner (issue 13, item 3): the winsoriser's rule, the
refused non-finite step, and the finding itself (the contract suite runs the same over every
catalog model)."""

from __future__ import annotations

import math
import random

import msgspec
import numpy as np
import pytest

from models import catalog
from models.base import BaseModel, NonFiniteState, Snapshot, check_finite
from models.online import (
    CLIP_K,
    WARM_UP,
    AdaptiveForest,
    OrderedLogit,
    RiverSoftmax,
    RunningMoments,
    SoftmaxRegression,
    Winsoriser,
)
from tests.unit.synthetic_matches import stream

LINE = {"open_p_H": 0.45, "open_p_D": 0.27, "open_p_A": 0.28}
RATINGS = ("elo_diff", "pi_exp_gd")


def _side(elo_diff: float, pi_exp_gd: float) -> dict[str, float]:
    """One fixture with a fixed opening line, so only the ratings differ between probes."""
    return stream(1, seed=23)[0][0] | LINE | {"elo_diff": elo_diff, "pi_exp_gd": pi_exp_gd}


STRONG, WEAK = _side(300.0, 1.6), _side(-300.0, -1.6)


def _gap(model: BaseModel) -> float:
    """How much more a strong home side is expected to win than a weak one."""
    return model.predict_proba_one(STRONG)["H"] - model.predict_proba_one(WEAK)["H"]


def _learned(model_id: str, n: int = 300) -> BaseModel:
    model = catalog.create(model_id)
    assert isinstance(model, BaseModel)
    for x, y in stream(n):
        model.learn_one(x, y)
    return model


def test_the_reported_event_no_longer_blinds_the_default_model() -> None:
    """The finding: one features event with elo_diff = pi_exp_gd = 1e300 made the default
    model predict the same P(H) for a strong and a weak home side (gap 0.0000 on main). Now
    the ratings still move the prediction by nearly as much as before, and the state is
    finite."""
    model = _learned(catalog.DEFAULT_MODEL_ID)
    before = _gap(model)
    assert before > 0.01
    model.learn_one(stream(1, seed=29)[0][0] | {"elo_diff": 1e300, "pi_exp_gd": 1e300}, "H")
    check_finite(model)
    assert _gap(model) > 0.9 * before


def test_a_bounded_but_unseen_value_is_clipped_to_six_sd() -> None:
    """elo_diff = 1500 after values within +-400 (sd ~110) is learned and predicted as
    mean + 6 sd (~660): as far as any larger value, and it moves the moments by at most
    6 sd / n."""
    model = _learned("online-logreg-numpy")
    assert isinstance(model, SoftmaxRegression)
    j = model.inputs.index("elo_diff")
    mean, count = model.clip.mean[j], model.clip.count[j]
    sd = math.sqrt(model.clip.m2[j] / count)
    assert 80.0 < sd < 150.0
    bound = float(model.clip.high[j])
    assert bound == pytest.approx(mean + CLIP_K * sd)
    assert bound < 1000.0
    at_bound = model.predict_proba_one(STRONG | {"elo_diff": bound})
    assert model.predict_proba_one(STRONG | {"elo_diff": 1500.0}) == at_bound
    assert model.predict_proba_one(STRONG | {"elo_diff": 1e300}) == at_bound
    model.learn_one(STRONG | {"elo_diff": 1500.0}, "H")
    assert abs(model.clip.mean[j] - mean) <= CLIP_K * sd / (count + 1) + 1e-9
    assert abs(model.moments.mean[j] - mean) < 0.1 * sd


@pytest.mark.parametrize("model_id", catalog.ONLINE_MODEL_IDS)
def test_a_poisoned_first_example_does_no_harm(model_id: str) -> None:
    """1e300 in every input of the very first example (nothing to judge it by: it counts as
    missing, then as one outlier among the warm-up values) leaves the model learning as if
    it had not come: the rating gap ends close to a clean model's."""
    clean = _learned(model_id)
    model = catalog.create(model_id)
    assert isinstance(model, BaseModel)
    model.learn_one(dict.fromkeys(model.inputs, 1e300), "H")
    for x, y in stream(300):
        model.learn_one(x, y)
    check_finite(model)
    assert _gap(model) > 0.5 * _gap(clean) > 0.0


def test_one_value_moves_the_range_by_a_bounded_amount() -> None:
    """After n values, one extreme value moves the mean by <= 6 sd / n and the sd by a factor
    <= sqrt(1 + 36 / n): 1.06 at n = 300."""
    rng = random.Random(1)
    clip = Winsoriser(1)
    for _ in range(300):
        clip.update(np.array([rng.gauss(0.0, 1.0)]))
    mean, sd = clip.mean[0], math.sqrt(clip.m2[0] / clip.count[0])
    clip.update(np.array([1e300]))
    assert abs(clip.mean[0] - mean) <= CLIP_K * sd / 300
    assert math.sqrt(clip.m2[0] / clip.count[0]) <= sd * math.sqrt(1 + CLIP_K**2 / 300)
    assert clip.high[0] < 8.0


def test_warm_up_judges_by_the_median() -> None:
    """Fewer than 3 values: a value cannot be judged and counts as missing (unless the input
    has a default range); from 3 values the median and MAD outvote one outlier."""
    clip = Winsoriser(2, low=(math.nan, -9.0), high=(math.nan, 0.0))
    assert np.isnan(clip.clip(np.array([[5.0, -20.0]]))[0, 0])
    assert clip.clip(np.array([[5.0, -20.0]]))[0, 1] == -9.0
    for value in (1e300, 1.0, 2.0, 3.0):
        clip.update(np.array([value, -1.0]))
    assert clip.clip(np.array([[1e300, -1.0]]))[0, 0] < 20.0
    assert clip.clip(np.array([[2.5, -1.0]]))[0, 0] == 2.5


def test_a_constant_input_does_not_lock_its_range() -> None:
    """An input constant through warm-up (rest days 30 at a season start) keeps a small range
    and widens it as other values come: after as many varied values, they pass unclipped."""
    clip = Winsoriser(1)
    for _ in range(50):
        clip.update(np.array([30.0]))
    assert clip.high[0] > clip.low[0]
    rng = random.Random(2)
    for _ in range(100):
        clip.update(np.array([rng.uniform(2.0, 14.0)]))
    assert clip.low[0] < 2.0
    assert clip.high[0] > 30.0


def test_non_finite_values_are_neither_learned_nor_passed_on() -> None:
    """NaN and infinity are missing: not counted, and clipped to NaN for the model to impute."""
    clip = Winsoriser(1)
    for value in (math.nan, math.inf, -math.inf):
        clip.update(np.array([value]))
        assert np.isnan(clip.clip(np.array([[value]])))[0, 0]
    assert clip.count[0] == 0


@pytest.mark.parametrize("n", [2, 10, WARM_UP, 100])
def test_winsoriser_state_round_trips(n: int) -> None:
    """Mid warm-up and past it, the state restores to the same ranges."""
    rng = random.Random(n)
    clip = Winsoriser(2, low=(math.nan, -9.0), high=(math.nan, 0.0))
    for _ in range(n):
        clip.update(np.array([rng.gauss(5.0, 2.0), -rng.random()]))
    restored = Winsoriser(2, low=(math.nan, -9.0), high=(math.nan, 0.0))
    restored.load(msgspec.msgpack.decode(msgspec.msgpack.encode(clip.state())))
    np.testing.assert_array_equal(restored.low, clip.low)
    np.testing.assert_array_equal(restored.high, clip.high)
    np.testing.assert_array_equal(restored.known, clip.known)
    assert restored.state() == clip.state()


REFUSERS = [
    lambda: SoftmaxRegression("m", RATINGS, prior=tuple(LINE), lr=1e308),
    lambda: RiverSoftmax("m", RATINGS, prior=tuple(LINE), lr=1e308),
    lambda: OrderedLogit("m", RATINGS, lr=1e308),
]


@pytest.mark.parametrize("make", REFUSERS, ids=["numpy-softmax", "river-softmax", "ordered"])
def test_a_step_that_would_make_state_non_finite_is_refused(make: object) -> None:
    """With a step size of 1e308 the weights overflow within a few steps: that step raises
    NonFiniteState and leaves the model exactly as it was, so it is never stored broken."""
    assert callable(make)
    model = make()
    assert isinstance(model, BaseModel)
    for x, y in stream(50):
        state = model.snapshot()
        try:
            model.learn_one(x, y)
        except NonFiniteState:
            assert model.snapshot() == state
            check_finite(model)
            return
        check_finite(model)
    pytest.fail("the weights never overflowed")


def test_the_forest_refuses_before_its_trees_learn(monkeypatch: pytest.MonkeyPatch) -> None:
    """The forest's trees are not copied each step: a non-finite input for them is refused
    before they learn, and the rest of the state is put back."""
    model = _learned("online-arf", 60)
    assert isinstance(model, AdaptiveForest)
    state = model.snapshot()
    monkeypatch.setattr(RunningMoments, "fill", lambda self, matrix: matrix * math.nan)
    with pytest.raises(NonFiniteState):
        model.learn_one(stream(1, seed=3)[0][0], "H")
    monkeypatch.undo()
    assert model.snapshot() == state


def test_check_finite_names_what_is_broken() -> None:
    """The learner's check before registering a version: raises for a broken state, names
    the part, and passes for a healthy one."""
    model = _learned("online-logreg-numpy", 30)
    assert isinstance(model, SoftmaxRegression)
    check_finite(model)
    model.weights[0, 0] = math.nan
    assert not model.state_is_finite()
    with pytest.raises(NonFiniteState, match="weights"):
        check_finite(model)


@pytest.mark.parametrize("model_id", catalog.ONLINE_MODEL_IDS)
def test_snapshots_written_before_the_winsoriser_still_restore(model_id: str) -> None:
    """A stored version without clipping state restores with ranges seeded from its own
    running moments: it predicts as it did on ordinary inputs, and clips extreme ones."""
    model = _learned(model_id, 100)
    envelope = msgspec.msgpack.decode(model.snapshot(), type=Snapshot)
    state = {k: v for k, v in envelope.state.items() if k != "clip"}
    old = msgspec.msgpack.encode(msgspec.structs.replace(envelope, state=state))
    restored = catalog.restore(model.kind, old)
    probe = [x for x, _ in stream(20, seed=31)]
    np.testing.assert_allclose(
        restored.predict_proba_many(probe), model.predict_proba_many(probe), atol=1e-12
    )
    restored.learn_one(probe[0] | {"elo_diff": 1e300}, "H")
    check_finite(restored)


REPLAYING = [m for m in catalog.ONLINE_MODEL_IDS if catalog.create(m).guard_every > 1]  # type: ignore[attr-defined]
"""Models that copy their guarded state every 64 steps and learn the steps since again (the
forest copies every step; its trees are covered by the test above)."""


@pytest.mark.parametrize("model_id", REPLAYING)
@pytest.mark.parametrize("learned", [1, 63, 64, 100])
def test_a_refused_step_anywhere_leaves_the_model_as_if_it_never_came(
    model_id: str, learned: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Wherever a refused step falls between two copies of the guarded state, the model is put
    back exactly (same predictions), and it then learns on exactly as a model that never saw
    the refused example."""
    model, twin = _learned(model_id, learned), _learned(model_id, learned)
    probe = stream(3, seed=11)
    before = [model.predict_proba_one(x) for x, _ in probe]
    original = type(model)._learned_finite
    calls: list[int] = []

    def once_broken(self: BaseModel) -> bool:  # the refused step only, not the ones redone
        calls.append(1)
        return len(calls) > 1 and original(self)

    monkeypatch.setattr(type(model), "_learned_finite", once_broken)
    with pytest.raises(NonFiniteState):
        model.learn_one(stream(1, seed=3)[0][0], "H")
    monkeypatch.undo()
    # Pickled River state may differ byte-wise after a round trip, never in what it does.
    assert [model.predict_proba_one(x) for x, _ in probe] == before
    for x, y in stream(5, seed=9):
        model.learn_one(x, y)
        twin.learn_one(x, y)
    assert [model.predict_proba_one(x) for x, _ in probe] == [
        twin.predict_proba_one(x) for x, _ in probe
    ]


def test_inputs_seen_but_not_learned_shape_the_clipping_ranges() -> None:
    """A policy that learns from a few extreme matches only (``errors:0.7``) still clips by
    every match the model has seen: ``observe_one`` widens the ranges without learning an
    outcome, so ordinary ratings keep moving the prediction."""

    def x(elo: float) -> dict[str, float]:
        return {"open_p_H": 0.45, "open_p_D": 0.27, "open_p_A": 0.28,
                "elo_diff": elo, "pi_exp_gd": elo / 300}  # fmt: skip

    learned_only, observed = catalog.create("online-logreg"), catalog.create("online-logreg")
    for model in (learned_only, observed):
        for elo in (400.0, 410.0, 420.0, 430.0, 440.0):
            model.learn_one(x(elo), "A")
    rng = random.Random(5)
    for _ in range(300):
        observed.observe_one(x(rng.gauss(0.0, 150.0)))
    gap = {
        name: model.predict_proba_one(x(100.0))["H"] - model.predict_proba_one(x(-100.0))["H"]
        for name, model in (("learned only", learned_only), ("observed", observed))
    }
    assert gap["learned only"] == 0.0  # both ratings clipped to the same fence
    assert gap["observed"] != 0.0


@pytest.mark.parametrize("model_id", REPLAYING)
def test_a_refused_step_after_observed_inputs_is_undone_exactly(
    model_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The undo of a refused step redoes the observed (not learned) inputs since the last
    copy too: the model ends as a twin that never saw the refused example."""
    model, twin = catalog.create(model_id), catalog.create(model_id)
    assert isinstance(model, BaseModel)
    examples = stream(30, seed=21)
    for i, (x, y) in enumerate(examples):
        for m in (model, twin):
            if i % 3:
                m.learn_one(x, y)
            else:
                m.observe_one(x)
    original = type(model)._learned_finite
    calls: list[int] = []

    def once_broken(self: BaseModel) -> bool:
        calls.append(1)
        return len(calls) > 1 and original(self)

    monkeypatch.setattr(type(model), "_learned_finite", once_broken)
    with pytest.raises(NonFiniteState):
        model.learn_one(stream(1, seed=3)[0][0], "H")
    monkeypatch.undo()
    probe = stream(5, seed=13)
    assert [model.predict_proba_one(x) for x, _ in probe] == [
        twin.predict_proba_one(x) for x, _ in probe
    ]
