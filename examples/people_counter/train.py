"""Train the people counter's event classifier on simulated traffic; write ``model.npz``.

Streams from seeds 1000-1039 train, 2000-2009 validate (to pick the regularisation);
``evaluate.py`` tests on 9000-9019, which nothing here sees. Each event the app's own
segmenter cuts is labelled with the true change of people inside over its span. The
classifier is scikit-learn's multinomial logistic regression at training time only; its
weights are exported as plain float32 arrays for the numpy-only app.

Run: ``python examples/people_counter/train.py`` (about half a minute).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import people_counter_app as app
import simulate

HERE = pathlib.Path(__file__).resolve().parent
TRAIN_SEEDS = range(1000, 1040)
VALIDATION_SEEDS = range(2000, 2010)
EPISODES = 60
C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)


def labelled_events(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features of every event the segmenter cuts from one stream, and the true net change."""
    stream = simulate.simulate(seed, EPISODES)
    seg = app.Segmenter()
    feats, labels = [], []
    for reading in stream.readings:
        f = seg.push(reading)
        if f is not None:
            start, stop = seg.last_span
            before = stream.inside[start - 1] if start > 0 else 0
            after = stream.inside[min(stop + app.END_SAMPLES, len(stream.inside) - 1)]
            feats.append(f)
            labels.append(int(np.clip(after - before, -2, 2)))
    return np.asarray(feats).reshape(-1, app.N_FEATURES), np.asarray(labels, dtype=int)


def dataset(seeds: range) -> tuple[np.ndarray, np.ndarray]:
    parts = [labelled_events(s) for s in seeds]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def fit(x: np.ndarray, y: np.ndarray, c: float) -> dict[str, np.ndarray]:
    """Standardise and fit; weights laid out for all five classes even if one is unseen."""
    from sklearn.linear_model import LogisticRegression  # training time only

    mean = x.mean(axis=0)
    scale = np.where(x.std(axis=0) > 1e-9, x.std(axis=0), 1.0)
    model = LogisticRegression(C=c, max_iter=5000).fit((x - mean) / scale, y)
    weights = np.full((len(app.CLASSES), app.N_FEATURES), 0.0)
    bias = np.full(len(app.CLASSES), -1e3)  # a class never seen is never predicted
    for row, cls in enumerate(model.classes_):
        k = int(np.nonzero(app.CLASSES == cls)[0][0])
        weights[k] = model.coef_[row]
        bias[k] = model.intercept_[row]
    return {
        "mean": mean.astype(np.float32),
        "scale": scale.astype(np.float32),
        "weights": weights.astype(np.float32),
        "bias": bias.astype(np.float32),
    }


def accuracy(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    counter = app.PeopleCounter(**params)
    return float(np.mean([counter.classify(f) == label for f, label in zip(x, y)]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=HERE / "model.npz")
    args = parser.parse_args(argv)
    x, y = dataset(TRAIN_SEEDS)
    xv, yv = dataset(VALIDATION_SEEDS)
    print(f"train: {len(y)} events, labels {dict(zip(*np.unique(y, return_counts=True)))}")
    rule = float(np.mean(np.clip(xv[:, 16], -2, 2) == yv))
    print(f"validation: {len(yv)} events; zone-sequence rule alone: {rule:.3f}")
    best = None
    for c in C_GRID:
        params = fit(x, y, c)
        acc = accuracy(params, xv, yv)
        print(f"  C={c:<6} validation event accuracy {acc:.3f}")
        if best is None or acc > best[0]:
            best = (acc, c, params)
    assert best is not None
    acc, c, params = best
    # Refit on train + validation with the chosen C.
    params = fit(np.concatenate([x, xv]), np.concatenate([y, yv]), c)
    np.savez(args.out, **params)
    size = sum(v.size for v in params.values())
    print(f"chose C={c} (validation {acc:.3f}); {size} parameters, {4 * size} bytes -> {args.out}")


if __name__ == "__main__":
    main()
