"""Simulated doorway traffic as seen by a two-zone time-of-flight sensor.

The sensor: an ST VL53L1X on the lintel (top of the door frame), looking straight down,
with its 16 x 16 SPAD array split into two 8 x 16 regions of interest — one on the outside
half of the doorway ("out" zone), one on the inside half ("in" zone) — ranged alternately,
20 readings per second per zone. This is the layout of ST's people-counting reference
design (UM2555). Each reading is the distance in mm to the nearest surface in that zone:
the floor (2.0-2.4 m below) when the doorway is empty, a head or shoulders when someone
walks under it. A reading the sensor flags as invalid (range status != 0) arrives as 0.

What is simulated (all from fixed seeds):
- people 1.15-2.0 m tall (adults and some children), walking 0.5-1.8 m/s with gait sway
  and head bob, entering or leaving, with a lateral offset in the doorway;
- the body as seen from above: head, shoulders and arms/bag at decreasing heights;
- episodes: single crossings, pauses in the doorway (1-5 s), turning back, two people
  close behind each other, two side by side, two in opposite directions one after another;
- sensor noise (6 mm + 0.6 % of range), per-stream mounting height, random invalid
  readings and bursts of them, rare spurious ranges, and readings that miss a person.

Ground truth is the number of people inside, which changes when a person's centre
crosses the line between the zones.

Run ``python simulate.py --seed 1 --episodes 40 --out log.csv`` to write a sensor log in
the CSV format ``sensor_log.py`` reads.
"""

from __future__ import annotations

import argparse
import csv
import pathlib
from dataclasses import dataclass, field

import numpy as np

RATE_HZ = 20
DT = 1.0 / RATE_HZ
#: Zone centres along the walking axis (m, + is inside) and half-width of what each sees.
ZONE_CENTRES = (-0.10, 0.10)
ZONE_HALF_WIDTH = 0.11
#: Body parts seen from above: (height below the top of the head m, half-depth m).
BODY = ((0.0, 0.09), (0.22, 0.16), (0.55, 0.30))
START_X = 1.1  # a walker appears this far from the line

KINDS = (
    ("single", 0.40),
    ("pause", 0.12),
    ("turn_back", 0.06),
    ("close_behind", 0.16),
    ("side_by_side", 0.10),
    ("opposite", 0.16),
)


@dataclass
class Walker:
    """One person's path: x position (m) per sample from ``start`` on, and who they are."""

    start: int
    x: np.ndarray
    height: float
    lateral: float
    direction: int  # +1 walking in, -1 walking out


@dataclass
class Episode:
    kind: str
    start: int  # sample index
    stop: int
    net: int  # change of the number of people inside


@dataclass
class Stream:
    """A simulated recording: readings ``(n, 2)`` int16 (out zone, in zone) and the truth."""

    readings: np.ndarray
    inside: np.ndarray  # people inside after each sample
    episodes: list[Episode] = field(default_factory=list)
    floor_mm: float = 0.0


def _path(rng: np.random.Generator, direction: int, pause: bool, turn_back: bool) -> np.ndarray:
    """x per sample for one walker: from one side to the other, maybe pausing or turning."""
    speed = rng.uniform(0.5, 1.8)
    phase = rng.uniform(0, 2 * np.pi)
    stride_hz = 0.9 * speed + 0.8
    pause_at = rng.uniform(-0.15, 0.15) if pause else None
    pause_len = int(rng.uniform(1.0, 5.0) * RATE_HZ)
    turn_at = rng.uniform(-0.2, 0.12) if turn_back else None
    xs: list[float] = []
    s, heading, k = -START_X, 1.0, 0
    while len(xs) < 60 * RATE_HZ:
        xs.append(s)
        if pause_at is not None and s >= pause_at:
            # Standing in the doorway, swaying a little.
            xs.extend(pause_at + 0.02 * np.sin(np.arange(pause_len) * 0.7 + phase))
            s, pause_at = xs[-1], None
        if turn_at is not None and heading > 0 and s >= turn_at:
            heading, turn_at = -1.0, None
            xs.extend([s] * int(rng.uniform(0.3, 1.5) * RATE_HZ))
        sway = 1.0 + 0.15 * np.sin(2 * np.pi * stride_hz * k * DT + phase)
        s += heading * speed * sway * DT
        k += 1
        if s > START_X or s < -START_X - 0.01:
            break
    return direction * np.asarray(xs)


def _reading(walkers: list[Walker], n: int, floor: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Noise-free distance (mm) per sample and zone for a set of walkers."""
    top = np.zeros((n, 2))  # height (m) of the highest surface each zone sees
    for w in walkers:
        idx = np.arange(w.start, min(w.start + len(w.x), n))
        x = w.x[: len(idx)]
        bob = 0.015 * np.sin(2 * np.pi * 1.8 * idx * DT)
        # Off-centre walkers are seen lower in the cone, and children not at all near its edge.
        visible = w.height + bob - 0.8 * max(0.0, abs(w.lateral) - 0.12)
        for z, centre in enumerate(ZONE_CENTRES):
            for drop, half in BODY:
                seen = np.abs(x - centre) < ZONE_HALF_WIDTH + half
                top[idx, z] = np.where(seen, np.maximum(top[idx, z], visible - drop), top[idx, z])
    return floor[None, :] - 1000.0 * top


def _sensor(clean: np.ndarray, floor: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add the VL53L1X's noise and faults to clean distances; invalid readings are 0."""
    n = len(clean)
    # Dark hair and clothes return little light: some readings of a person are the floor.
    person = clean < floor[None, :] - 300
    missed = person & (rng.random(clean.shape) < 0.02)
    clean = np.where(missed, floor[None, :], clean)
    noisy = clean + rng.normal(size=clean.shape) * (6.0 + 0.006 * clean)
    p_invalid = rng.uniform(0.005, 0.03)
    invalid = rng.random(clean.shape) < p_invalid
    for _ in range(rng.poisson(n / 600)):  # bursts of invalid readings (sun, dirty cover)
        at, length = rng.integers(0, n), rng.integers(3, 11)
        invalid[at : at + length, rng.integers(0, 2)] = True
    spurious = rng.random(clean.shape) < 0.002
    noisy[spurious] = rng.uniform(50, 4000, size=int(spurious.sum()))
    noisy[invalid] = 0.0
    return np.clip(np.round(noisy), 0, 4000).astype(np.int16)


def simulate(seed: int, episodes: int = 60, kinds: tuple[str, ...] | None = None) -> Stream:
    """One recording of ``episodes`` episodes, reproducible from ``seed``.

    ``kinds`` restricts the episode kinds (default: all, with their usual frequencies).

    Raises:
        ValueError: unknown kind or a non-positive number of episodes.
    """
    if episodes <= 0:
        raise ValueError("episodes must be positive")
    names = [k for k, _ in KINDS]
    weights = np.array([p for _, p in KINDS])
    if kinds is not None:
        unknown = set(kinds) - set(names)
        if unknown:
            raise ValueError(f"unknown episode kind(s): {sorted(unknown)}")
        weights = np.array([p if k in kinds else 0.0 for k, p in KINDS])
    weights = weights / weights.sum()
    rng = np.random.default_rng(seed)
    floor = rng.uniform(2000, 2400) + rng.uniform(-30, 30, size=2)
    walkers: list[Walker] = []
    plan: list[tuple[str, int, list[Walker]]] = []
    t = int(rng.uniform(2, 4) * RATE_HZ)
    inside = 0
    for _ in range(episodes):
        kind = names[rng.choice(len(names), p=weights)]
        group = 1 if kind in ("single", "pause", "turn_back") else 2
        direction = int(rng.choice([-1, 1])) if inside >= group else 1
        new: list[Walker] = []

        def person(start: int, d: int, pause: bool = False, turn: bool = False, lat: float | None = None) -> None:
            height = rng.normal(1.72, 0.09) if rng.random() > 0.12 else rng.uniform(1.15, 1.45)
            lateral = rng.uniform(-0.2, 0.2) if lat is None else lat
            walker = Walker(start, _path(rng, d, pause, turn), float(np.clip(height, 1.1, 2.0)), lateral, d)
            new.append(walker)  # noqa: B023 - called only within this iteration

        if kind == "single":
            person(t, direction)
        elif kind == "pause":
            person(t, direction, pause=True)
        elif kind == "turn_back":
            person(t, direction, turn=True)
        elif kind == "close_behind":
            person(t, direction)
            gap = rng.uniform(0.5, 1.2)  # m between them
            person(t + int(gap / 1.0 * RATE_HZ), direction)
        elif kind == "side_by_side":
            person(t, direction, lat=rng.uniform(-0.3, -0.15))
            person(t + int(rng.integers(0, 4)), direction, lat=rng.uniform(0.15, 0.3))
        elif kind == "opposite":
            person(t, direction)
            person(t + len(new[0].x) - int(rng.uniform(0.3, 1.0) * RATE_HZ), -direction)
        stop = max(w.start + len(w.x) for w in new)
        for w in new:
            stop = max(stop, w.start + len(w.x))
        net = sum(w.direction for w in new if np.sign(w.x[-1]) == w.direction)
        inside += net
        plan.append((kind, t, new))
        walkers.extend(new)
        t = stop + int(rng.uniform(1.5, 6.0) * RATE_HZ)
    n = t
    clean = _reading(walkers, n, floor, rng)
    readings = _sensor(clean, floor, rng)
    # Truth: the count changes when a walker's centre crosses x = 0.
    delta = np.zeros(n, dtype=np.int64)
    for w in walkers:
        sign = np.sign(w.x)
        for i in np.nonzero(np.diff(sign) != 0)[0]:
            if w.start + i + 1 < n and sign[i + 1] != 0:
                delta[w.start + i + 1] += int(sign[i + 1])
    inside_series = np.cumsum(delta)
    eps = [
        Episode(kind, start, max(w.start + len(w.x) for w in group_walkers),
                int(inside_series[min(max(w.start + len(w.x) for w in group_walkers), n - 1)]
                    - (inside_series[start - 1] if start > 0 else 0)))
        for kind, start, group_walkers in plan
    ]
    return Stream(readings=readings, inside=inside_series, episodes=eps, floor_mm=float(floor.mean()))


def write_csv(stream: Stream, path: pathlib.Path) -> None:
    """Write a stream as a sensor log: ``t_ms,zone_out_mm,zone_in_mm`` (see sensor_log.py)."""
    with pathlib.Path(path).open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["t_ms", "zone_out_mm", "zone_in_mm"])
        for i, (a, b) in enumerate(stream.readings):
            out.writerow([i * 1000 // RATE_HZ, int(a), int(b)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write simulated doorway traffic as a CSV log.")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    args = parser.parse_args(argv)
    stream = simulate(args.seed, args.episodes)
    write_csv(stream, args.out)
    print(f"{len(stream.readings)} samples, {len(stream.episodes)} episodes, "
          f"{int(stream.inside[-1])} inside at the end -> {args.out}")


if __name__ == "__main__":
    main()
