"""What the scorer's estimates before results cost per event, by batch size:
``python -m tests.bench.estimates_cost``.

An idle scorer scores each event as it arrives (batches of one); at 1,000 events/s the batches
stay small, so a cost paid per batch and model weighs on the latency. Prints microseconds per
event for each batch size, the best of ``--repeat`` runs (the machine's noise only adds).
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

from agents import estimates_rules
from agents.scorer import observe_estimates
from agents.scorer_rules import predict_many
from models.catalog import REFERENCE_MODEL_IDS
from tests.bench.workload import Matches, default_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=6_000)
    parser.add_argument("--sizes", default="1,10,100,500")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    features = [f for f, _ in Matches.load().take(args.events, "e")]
    models = default_models()
    now = datetime.now(UTC)
    for size in (int(s) for s in args.sizes.split(",")):
        batches = [features[i : i + size] for i in range(0, len(features), size)]
        scored = [(batch, predict_many(batch, models, now=now)) for batch in batches]
        runs = []
        for _ in range(args.repeat):
            estimates = estimates_rules.ModelEstimates(silent=REFERENCE_MODEL_IDS)
            started = time.perf_counter()
            for batch, predictions in scored:
                observe_estimates(estimates, batch, predictions)
            runs.append(time.perf_counter() - started)
        print(f"batch {size:>4}: {min(runs) / len(features) * 1e6:7.1f} us per event")


if __name__ == "__main__":
    main()
