"""Counting accuracy of the people counter on held-out simulated traffic.

Test streams come from seeds 9000-9019 (60 episodes each), never used in training. The
app is built by its own ``factory`` from ``model.npz`` and fed 1-second frames exactly as
on the device; its count at a sample is the last count it reported.

Reported:
- per-episode exact accuracy: an episode (one person, or a pair, crossing, pausing or
  turning back) is right when the app's count changed by exactly the true amount between
  the start of the episode and the start of the next one;
- the same per episode kind;
- final count error per stream (|reported - true| after the last episode);
- the same accuracy for the classic zone-sequence rule (ST's UM2555 state machine: +1 for
  a complete out->both->in pass, -1 for the reverse) on the same segmenter, as a baseline.

Run: ``python examples/people_counter/evaluate.py`` (about 15 s).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import people_counter_app as app
import simulate

HERE = pathlib.Path(__file__).resolve().parent
TEST_SEEDS = tuple(range(9000, 9020))
EPISODES = 60
FRAME = 20  # samples per frame, as in sensor.toml


class RuleCounter(app.PeopleCounter):
    """Baseline: the zone-sequence rule instead of the classifier, same segmenter."""

    def __init__(self) -> None:
        n = app.N_FEATURES
        super().__init__(np.zeros(n), np.ones(n), np.zeros((5, n)), np.zeros(5))

    def classify(self, feats: np.ndarray) -> int:
        return int(np.clip(feats[16], -2, 2))


@dataclass(frozen=True)
class Report:
    episodes: int
    correct: int
    by_kind: dict[str, tuple[int, int]]  # kind -> (correct, total)
    final_errors: list[int]

    @property
    def accuracy(self) -> float:
        return self.correct / self.episodes

    @property
    def mean_final_error(self) -> float:
        return float(np.mean(self.final_errors))


def replay(counter: app.PeopleCounter, readings: np.ndarray) -> np.ndarray:
    """The counter's reported count after each sample (frame granularity)."""
    out = np.zeros(len(readings), dtype=np.int64)
    count = 0
    for start in range(0, len(readings) - FRAME + 1, FRAME):
        result = counter.process(readings[start : start + FRAME])
        if result is not None:
            count = result["count"]
        out[start : start + FRAME] = count
    tail = len(readings) - len(readings) % FRAME
    out[tail:] = count
    return out


def evaluate(make_counter, seeds: tuple[int, ...] = TEST_SEEDS, episodes: int = EPISODES) -> Report:
    """Score counters made by ``make_counter()`` (one per stream) on the given seeds."""
    correct = total = 0
    by_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    finals = []
    for seed in seeds:
        stream = simulate.simulate(seed, episodes)
        predicted = replay(make_counter(), stream.readings)
        n = len(predicted)
        starts = [e.start for e in stream.episodes] + [n]
        for i, ep in enumerate(stream.episodes):
            before = predicted[ep.start - 1] if ep.start > 0 else 0
            after = predicted[min(starts[i + 1], n) - 1]
            truth_before = stream.inside[ep.start - 1] if ep.start > 0 else 0
            truth_after = stream.inside[min(starts[i + 1], n) - 1]
            ok = int(after - before == truth_after - truth_before)
            correct += ok
            total += 1
            by_kind[ep.kind][0] += ok
            by_kind[ep.kind][1] += 1
        finals.append(int(abs(predicted[-1] - stream.inside[-1])))
    return Report(total, correct, {k: (v[0], v[1]) for k, v in by_kind.items()}, finals)


def table(model: Report, rule: Report) -> str:
    lines = [f"{'':<16} {'classifier':>12} {'zone rule':>12}   episodes"]
    lines.append(f"{'all episodes':<16} {model.accuracy:12.3f} {rule.accuracy:12.3f}   {model.episodes}")
    for kind, _ in simulate.KINDS:
        if kind in model.by_kind:
            c, t = model.by_kind[kind]
            rc, _ = rule.by_kind[kind]
            lines.append(f"{kind:<16} {c / t:12.3f} {rc / t:12.3f}   {t}")
    lines.append(
        f"{'final |error|':<16} {model.mean_final_error:12.2f} {rule.mean_final_error:12.2f}"
        f"   mean over {len(model.final_errors)} streams (max {max(model.final_errors)} / "
        f"{max(rule.final_errors)})"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=pathlib.Path, default=HERE / "model.npz")
    args = parser.parse_args(argv)
    model = evaluate(lambda: app.factory([args.model]))
    rule = evaluate(RuleCounter)
    print("exact-count accuracy per episode, held-out seeds "
          f"{TEST_SEEDS[0]}-{TEST_SEEDS[-1]} ({EPISODES} episodes each)")
    print(table(model, rule))


if __name__ == "__main__":
    main()
