#!/usr/bin/env bash
# A longer local atheris run of one harness (tests/fuzz/fuzz_TARGET.py), with a corpus
# kept between runs in build/fuzz/TARGET/corpus and failing inputs saved in
# build/fuzz/TARGET/artifacts. Extra arguments after SECONDS go to libFuzzer.
#
#   scripts/fuzz.sh report            # 5 minutes
#   scripts/fuzz.sh bundle 3600 -seed=7
#
# Reproduce a saved input: .venv/bin/python -m tests.fuzz.fuzz_TARGET build/fuzz/TARGET/artifacts/crash-...
set -euo pipefail
cd "$(dirname "$0")/.."

targets=$(cd tests/fuzz && ls fuzz_*.py | sed 's/^fuzz_//; s/\.py$//' | tr '\n' ' ')
if [[ $# -lt 1 || ! -f tests/fuzz/fuzz_$1.py ]]; then
  echo "usage: scripts/fuzz.sh TARGET [SECONDS] [libFuzzer flags...]; targets: $targets" >&2
  exit 2
fi
target=$1
seconds=${2:-300}
shift $(( $# >= 2 ? 2 : 1 ))
python=${PYTHON:-.venv/bin/python}
out=build/fuzz/$target
mkdir -p "$out/corpus" "$out/artifacts"

# The files a harness makes (a store, a fleet) go to RAM when there is one, and away after.
shm=/dev/shm; [[ -w $shm ]] || shm=${TMPDIR:-/tmp}
work=$(mktemp -d "$shm/tinyward-fuzz-$target.XXXXXX")
trap 'rm -rf "$work"' EXIT

TINYWARD_FUZZ_WORKDIR=$work "$python" -m "tests.fuzz.fuzz_$target" "$out/corpus" \
  -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -len_control=0 \
  -artifact_prefix="$out/artifacts/" -print_final_stats=1 "$@"
