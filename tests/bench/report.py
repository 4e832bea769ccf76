"""The closing ``BENCH`` line, the JSON record of a run, and the latency-against-load chart."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agents.loop import BATCH_SIZE
from tests.bench.inprocess import ScoringCost
from tests.bench.measure import Latency, Throughput
from tests.bench.phases import Reconciliation

BENCH_FIELDS: tuple[str, ...] = (
    "passthrough_eps", "scorer_eps", "ratio", "peer_passthrough_eps", "peer_ratio", "p50_ms",
    "p95_ms", "p99_ms", "offered_eps", "reconcile_eps", "learn_per_s", "score_us", "estimates_us",
)  # fmt: skip
BENCH_LINE = re.compile(
    r"^BENCH "
    + " ".join(
        f"{name}=(?P<{name}>\\d+)" if name == "offered_eps" else f"{name}=(?P<{name}>\\d+\\.\\d+)"
        for name in BENCH_FIELDS
    )
    + "$"
)


@dataclass
class BenchRun:
    """Everything one run measured, with the machine it ran on."""

    machine: dict[str, Any]
    sizes: dict[str, Any]
    passthrough: Throughput  # aiokafka, the client Faust is built on
    confluent_passthrough: Throughput  # confluent-kafka (librdkafka)
    relay: Throughput
    scorer: Throughput
    models: int
    latency: Latency
    reconciliation: Reconciliation
    learn_per_s: float
    scoring: ScoringCost
    scoring_difference: float
    sweep: list[Latency] = field(default_factory=list)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def ratio(self) -> float:
        """The scorer against the aiokafka passthrough (the figure of earlier rounds)."""
        return ratio(self.scorer.eps, self.passthrough.eps)

    @property
    def peer_passthrough_eps(self) -> float:
        """The faster of the two passthroughs: the honest ceiling of a Python Kafka loop."""
        return peer_eps(self.passthrough, self.confluent_passthrough)

    @property
    def peer_ratio(self) -> float:
        """The scorer against that ceiling."""
        return ratio(self.scorer.eps, self.peer_passthrough_eps)

    def line(self) -> str:
        """The one line ``make bench`` ends with."""
        return (
            f"BENCH passthrough_eps={self.passthrough.eps:.1f} scorer_eps={self.scorer.eps:.1f} "
            f"ratio={self.ratio:.3f} peer_passthrough_eps={self.peer_passthrough_eps:.1f} "
            f"peer_ratio={self.peer_ratio:.3f} p50_ms={self.latency.p50_ms:.2f} "
            f"p95_ms={self.latency.p95_ms:.2f} p99_ms={self.latency.p99_ms:.2f} "
            f"offered_eps={self.latency.offered_eps} "
            f"reconcile_eps={self.reconciliation.eps:.1f} learn_per_s={self.learn_per_s:.1f} "
            f"score_us={self.scoring.total_us:.1f} estimates_us={self.scoring.estimates_us:.1f}"
        )

    def details(self) -> list[str]:
        """Lines printed before the ``BENCH`` line: the figures behind it."""
        lat, rec, cost = self.latency, self.reconciliation, self.scoring
        lines = [
            f"machine: {self.machine['cpus']} CPUs ({self.machine['cpu_model']}), "
            f"{self.machine['memory_gib']:.1f} GiB; load average before "
            f"{self.machine['load_before']}, after {self.load_after}",
            f"passthrough (aiokafka): {self.passthrough.events} events in "
            f"{self.passthrough.seconds:.2f} s, {self.passthrough.eps:.1f} eps",
            f"passthrough (confluent-kafka): {self.confluent_passthrough.events} events in "
            f"{self.confluent_passthrough.seconds:.2f} s, "
            f"{self.confluent_passthrough.eps:.1f} eps; the scorer runs at "
            f"{self.peer_ratio:.3f} of the faster",
            f"faust relay (the floor of a Faust agent): {self.relay.events} events in "
            f"{self.relay.seconds:.2f} s, {self.relay.eps:.1f} eps = "
            f"{_share(self.relay.eps, self.passthrough.eps)} of the aiokafka passthrough; "
            f"the scorer runs at {_share(self.scorer.eps, self.relay.eps)} of it",
            f"scorer: {self.scorer.events} events, {self.scorer.outputs} predictions "
            f"({self.models} models) in {self.scorer.seconds:.2f} s",
            f"latency at {lat.offered_eps} eps for {lat.seconds:.1f} s: {lat.received}/{lat.sent} "
            f"champion predictions; p50 {lat.p50_ms:.2f} p95 {lat.p95_ms:.2f} "
            f"p99 {lat.p99_ms:.2f} max {lat.max_ms:.2f} ms",
            reconciliation_details(rec),
            f"in-process per event: decode {cost.decode_us:.1f} + predict {cost.predict_us:.1f} "
            f"+ encode {cost.encode_us:.1f} + estimates {cost.estimates_us:.1f} "
            f"= {cost.total_us:.1f} us ({cost.estimates_us * BATCH_SIZE / 1000:.1f} ms of "
            f"estimates per batch of {BATCH_SIZE}); batch and one-by-one "
            f"scoring agree (probabilities within {self.scoring_difference:.1e})",
        ]
        lines += [
            f"sweep {s.offered_eps} eps: {s.received}/{s.sent}; p50 {s.p50_ms:.2f} "
            f"p95 {s.p95_ms:.2f} p99 {s.p99_ms:.2f} max {s.max_ms:.2f} ms"
            for s in self.sweep
        ]
        return lines

    def to_json(self) -> str:
        record = asdict(self)
        record["ratio"] = self.ratio
        record["peer_passthrough_eps"] = self.peer_passthrough_eps
        record["peer_ratio"] = self.peer_ratio
        record["bench_line"] = self.line()
        return json.dumps(record, indent=2, default=str)


@dataclass
class StreamRun:
    """``--only relay|scorer``: one Faust phase beside the two ceilings measured just before."""

    phase: str  # "relay" or "scorer"
    machine: dict[str, Any]
    passthrough: Throughput  # aiokafka
    confluent_passthrough: Throughput
    measured: Throughput  # the relay's or the scorer's
    latency: list[Latency] = field(default_factory=list)  # the scorer's: --rate, then the sweep
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def peer_passthrough_eps(self) -> float:
        return peer_eps(self.passthrough, self.confluent_passthrough)

    @property
    def peer_ratio(self) -> float:
        """The measured phase against the faster ceiling (the BENCH line's, for the scorer)."""
        return ratio(self.measured.eps, self.peer_passthrough_eps)

    def line(self) -> str:
        """``STREAM phase=... eps=... peer_ratio=...`` (and the latency for the scorer)."""
        line = (
            f"STREAM phase={self.phase} passthrough_eps={self.passthrough.eps:.1f} "
            f"peer_passthrough_eps={self.peer_passthrough_eps:.1f} eps={self.measured.eps:.1f} "
            f"ratio={_share(self.measured.eps, self.passthrough.eps)} "
            f"peer_ratio={self.peer_ratio:.3f}"
        )
        if self.latency:
            lat = self.latency[0]
            line += (
                f" p50_ms={lat.p50_ms:.2f} p95_ms={lat.p95_ms:.2f} p99_ms={lat.p99_ms:.2f} "
                f"offered_eps={lat.offered_eps}"
            )
        return line

    def details(self) -> list[str]:
        lines = [
            f"machine: {self.machine['cpus']} CPUs; load average before "
            f"{self.machine['load_before']}, after {self.load_after}",
            f"passthrough (aiokafka): {self.passthrough.eps:.1f} eps; (confluent-kafka): "
            f"{self.confluent_passthrough.eps:.1f} eps",
            f"{self.phase}: {self.measured.events} events, {self.measured.outputs} outputs in "
            f"{self.measured.seconds:.2f} s, {self.measured.eps:.1f} eps",
        ]
        lines += [
            f"latency at {s.offered_eps} eps for {s.seconds:.1f} s: {s.received}/{s.sent}; "
            f"p50 {s.p50_ms:.2f} p95 {s.p95_ms:.2f} p99 {s.p99_ms:.2f} max {s.max_ms:.2f} ms"
            for s in self.latency
        ]
        return lines


def reconciliation_details(rec: Reconciliation) -> str:
    return (
        f"reconciliation: {rec.results} results -> {rec.evaluations} evaluations "
        f"({rec.evaluation_rows} rows, {rec.feed_items} feed items) in {rec.seconds:.2f} s; "
        f"ledgers {rec.ledger_bytes:.0f} bytes each as written, "
        f"{rec.changelog_bytes_per_match:.0f} bytes per match to the changelog "
        f"({rec.changelog_records} records); the reconciler's process used {rec.cpu_s:.2f} s "
        f"of CPU, {rec.cpu_us_per_evaluation:.1f} us per evaluation"
    )


def peer_eps(aiokafka: Throughput, confluent: Throughput) -> float:
    """The faster of the two passthroughs measured at the same moment."""
    return max(aiokafka.eps, confluent.eps)


def ratio(eps: float, ceiling: float) -> float:
    """``eps`` against a ceiling (0 when the ceiling measured nothing)."""
    return eps / ceiling if ceiling else 0.0


def _share(part: float, whole: float) -> str:
    return f"{part / whole:.3f}" if whole else "n/a"


def parse_line(line: str) -> dict[str, float]:
    """The fields of a ``BENCH`` line; ValueError if it is not one."""
    match = BENCH_LINE.match(line.strip())
    if match is None:
        raise ValueError(f"not a BENCH line: {line!r}")
    return {name: float(value) for name, value in match.groupdict().items()}


def plot_sweep(sweep: list[Latency], path: Path, title: str) -> None:
    """Latency percentiles (log scale) against offered load."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = [s.offered_eps for s in sweep]
    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=120)
    for label, values, style in (
        ("p50", [s.p50_ms for s in sweep], "o-"),
        ("p95", [s.p95_ms for s in sweep], "s-"),
        ("p99", [s.p99_ms for s in sweep], "^-"),
        ("max", [s.max_ms for s in sweep], "x--"),
    ):
        axes.plot(rates, values, style, label=label)
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xticks(rates, [str(r) for r in rates])
    axes.set_xlabel("offered load (feature events per second)")
    axes.set_ylabel("feature -> champion prediction (ms)")
    axes.set_title(title, fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
