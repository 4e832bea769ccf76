"""Ledger encodings side by side, in-process: ``python -m tests.bench.ledger_codec [N]``.

Builds ``N`` (default 2,000) ledgers of real matches as the reconciler does (features, the four
default models' predictions; then the result), and prints, for the JSON encoding of earlier
releases and the compact one (``agents/reconciler_codec.py``), the mean size and the CPU time
(``time.process_time``, best of three passes: steadier than wall time on a shared machine) to
decode and to encode one ledger.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec

from agents.reconciler_codec import decode_ledger, encode_ledger
from agents.reconciler_rules import MatchLedger, apply_features, apply_prediction, apply_result
from agents.scorer_rules import predict_many
from tests.bench.workload import Matches, default_models

_JSON = msgspec.json.Decoder(MatchLedger)


def cpu_us(action: Callable[[], object], count: int) -> float:
    """Best of three passes of ``action`` (``count`` items each), CPU microseconds per item."""
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        action()
        best = min(best, time.process_time() - started)
    return best / count * 1e6


def main(argv: list[str]) -> int:
    count = int(argv[0]) if argv else 2_000
    now = datetime.now(UTC)
    models = default_models()
    ledgers, results = [], []
    for features, result in Matches.load().take(count, "c"):
        ledger = MatchLedger()
        apply_features(ledger, features)
        for prediction in predict_many([features], models, now=now):
            apply_prediction(ledger, prediction, now=now)
        ledgers.append(ledger)
        results.append(result)
    for stage in ("primed (features + 4 predictions)", "reconciled (+ result)"):
        if stage.startswith("reconciled"):
            for ledger, result in zip(ledgers, results, strict=True):
                apply_result(ledger, result, now=now)
        for name, encode, decode in (
            ("json", msgspec.json.encode, _JSON.decode),
            ("compact", encode_ledger, decode_ledger),
        ):
            values = [encode(ledger) for ledger in ledgers]
            size = sum(map(len, values)) / count
            decode_us = cpu_us(lambda: [decode(v) for v in values], count)  # noqa: B023
            encode_us = cpu_us(lambda: [encode(ledger) for ledger in ledgers], count)  # noqa: B023
            print(
                f"{stage:34} {name:8} {size:7.0f} B  decode {decode_us:5.1f} us  "
                f"encode {encode_us:5.1f} us (CPU, {count} ledgers)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
