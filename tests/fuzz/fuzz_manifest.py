"""atheris harness: :func:`tinyward.app.manifest.parse_manifest` (``sensor.toml``), and
what the core computes from an accepted manifest: the leakage bound of its contract.

The input is the manifest file's bytes; bytes that are not UTF-8 stop here, as
``load_manifest`` refuses them before parsing.

Documented outcomes: a :class:`~tinyward.app.manifest.Manifest` (whose contract has a
finite leakage bound), or :class:`~tinyward.app.errors.ManifestError`. Anything else is
a crash.
"""

from __future__ import annotations

import math
from pathlib import Path

from tests.fuzz.harness import REPO, instrumented, run

with instrumented(__name__):
    from tinyward.app.contract import leakage_bound
    from tinyward.app.errors import ManifestError
    from tinyward.app.manifest import parse_manifest

FOLDER = Path("/nonexistent/app")


def TestOneInput(data: bytes) -> None:  # the name atheris and OSS-Fuzz use
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    try:
        manifest = parse_manifest(text, FOLDER)
    except ManifestError:
        return
    bound = leakage_bound(manifest.contract)
    assert math.isfinite(bound.bits_per_minute), "an accepted contract leaks without bound"
    assert all(model.is_relative_to(FOLDER) for model in manifest.models), "a model escapes"


def seeds() -> list[bytes]:
    found = sorted({*REPO.glob("src/tinyward/app/**/sensor.toml"),
                    *REPO.glob("src/tinyward/assess/data/hostile/*/sensor.toml"),
                    *REPO.glob("tests/app/**/sensor.toml"), *REPO.glob("examples/**/sensor.toml")})
    out = [path.read_bytes() for path in found]
    out.append(b"""[app]
name = "every-type"
version = "0.1"
entry = "pkg.module:make_app"
models = ["model.tflite", "sub/labels.txt"]

[input]
channels = ["x", "y", "z"]
sample_rate_hz = 12.5
dtype = "float32"
frame_shape = [25, 3]

[output]
max_results_per_minute = 60

[output.fields]
count = { type = "int", min = -5, max = 5 }
label = { type = "enum", values = ["a", "b", "c"] }
level = { type = "float", min = 0.0, max = 1.0, step = 0.125 }
alarm = { type = "bool" }
""")
    # Depth is something coverage guidance does not reward: start from deep nesting.
    out.append(b"a = " + b"[" * 1500 + b"]" * 1500 + b"\nb = " + b"{c=" * 600 + b"1" + b"}" * 600)
    return out


if __name__ == "__main__":
    run(TestOneInput, seeds)
