#!/usr/bin/env bash
# Run the test suite N times in a row on this checkout, the second run with an injected failure,
# and check that every other run passes and that no run leaves anything behind in the checkout
# (issue 17: "`make test` passes 10 times in a row on one checkout, including after a failing
# run"). What could carry state from one run to the next is switched off in tests/conftest.py and
# pyproject.toml: no hypothesis example database (and hypothesis's other files in a folder of the
# run), no pytest cache, obliviate's caches ($OBLIVIATE_CACHE) in a folder of the run.
#
#   scripts/repeat_tests.sh                          # 11 runs of the default suite (what `make test`
#                                                    # runs): 10 passes, the 2nd run the injected failure
#   N=3 scripts/repeat_tests.sh tests/test_core.py   # a cheap demonstration on a few files
#
# Exit 0 when every run but the injected one passed and the injected one failed; 1 otherwise.
# Start it from a terminal, or give its children SIGINT back: a job started in the background of a
# non-interactive shell inherits SIGINT ignored (POSIX), which a test that interrupts a child
# must undo (tests/test_bench_runner.py does).
set -u
cd "$(dirname "$0")/.."
N=${N:-11}
PY=${PY:-.venv/bin/python}
if [ $# -eq 0 ]; then set -- tests; fi

inject=$(mktemp -d)
trap 'rm -rf "$inject"' EXIT
cat >"$inject/test_injected_failure.py" <<'PYEOF'
"""A failing run: a plain failure that leaves a corrupt cache entry behind, and a property test
whose failing example hypothesis would store (before issue 17) and replay in every later run."""
import os
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st


def test_injected_failure_with_a_poisoned_cache():
    cache = Path(os.environ["OBLIVIATE_CACHE"])
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "original-poisoned.pt").write_bytes(b"not a checkpoint")
    raise AssertionError("injected failure")


@given(st.integers())
def test_injected_hypothesis_failure(x):
    assert x < 10
PYEOF

snapshot() {  # the ignored files of the checkout (caches, results; tools' caches excluded)
    # only ignored files: in a tree others edit meanwhile, new untracked files are not ours
    git status --porcelain --ignored --untracked-files=all | grep '^!! ' |
        grep -v -e '\.venv/' -e '__pycache__' -e '\.ruff_cache/' -e '\.mypy_cache/' | sort
}

before=$(snapshot)
status=0
for i in $(seq 1 "$N"); do
    if [ "$i" -eq 2 ]; then
        if "$PY" -m pytest -q -c pyproject.toml --rootdir . "$@" "$inject/test_injected_failure.py" \
            >"$inject/run.log" 2>&1; then
            echo "run $i: the injected failure did not fail"; status=1
        else
            echo "run $i: failed as injected ($(tail -n 1 "$inject/run.log"))"
        fi
    elif "$PY" -m pytest -q "$@" >"$inject/run.log" 2>&1; then
        echo "run $i: passed ($(tail -n 1 "$inject/run.log"))"
    else
        echo "run $i: FAILED"; tail -n 30 "$inject/run.log"; status=1
    fi
    after=$(snapshot)
    if [ "$after" != "$before" ]; then
        echo "run $i left files in the checkout:"; diff <(echo "$before") <(echo "$after"); status=1
        before=$after
    fi
done
exit $status
