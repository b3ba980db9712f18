"""A local readout written only for the air-gapped probe's controls: codes on stdin.

``python -m tests.assess.fakereadout open``: any code unlocks it (no authentication).
``python -m tests.assess.fakereadout memory``: wrong codes, locked out after 3 — counted in
memory, so a restarted readout checks codes again.
"""

from __future__ import annotations

import sys


def main(kind: str) -> None:
    failures = 0
    while True:
        sys.stdout.write("code> ")
        sys.stdout.flush()
        line = sys.stdin.readline()
        if not line:
            return
        if kind == "open":
            print("unlocked: temperature 21.5")
            continue
        failures += 1
        print("too many failed attempts: try again in 60 s" if failures > 3 else "wrong code")


if __name__ == "__main__":
    main(sys.argv[1])
