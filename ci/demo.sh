#!/usr/bin/env bash
# The main job, end to end: install dart (ci/setup.sh, Python 3.12), run the
# example training script plainly for a reference result, run it under dart,
# kill it with SIGKILL mid-training, show `dart log`, run the same command again
# (it resumes) and check that its final line equals the reference.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash ci/setup.sh 3.12
python=.venv-3.12/bin/python
export PYTHONUNBUFFERED=1
store=.dart-demo                 # gitignored; removed first so the demo starts clean
kill_at=${DART_DEMO_KILL_AT:-4}   # kill once this epoch has been printed (of 15)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
rm -rf "$store"

echo
echo "==> 1. reference: python examples/train.py (no dart)"
"$python" examples/train.py | tee "$out/reference"
reference=$(tail -n 1 "$out/reference")

cmd=("$python" -m dart run --store "$store" --every 2 examples/train.py)
echo
echo "==> 2. under dart, killed with SIGKILL once epoch $kill_at has been printed: ${cmd[*]}"
started=$SECONDS
"${cmd[@]}" > >(tee "$out/first") 2>&1 &
pid=$!
# Kill on progress rather than after a fixed time, so a slow first torch import
# does not turn the demo into "killed before anything happened".
until grep -q "^epoch *$kill_at/" "$out/first" 2>/dev/null || ! kill -0 "$pid" 2>/dev/null \
    || [ $((SECONDS - started)) -ge 120 ]; do
    sleep 0.2
done
if kill -KILL "$pid" 2>/dev/null; then
    wait "$pid" 2>/dev/null || true
    echo "--- killed with SIGKILL after $((SECONDS - started)) s ---"
else
    wait "$pid" || true
    echo "FAIL: the run ended before it could be killed" >&2
    exit 1
fi

echo
echo "==> 3. what was committed: $python -m dart log --store $store"
"$python" -m dart log --store "$store"

echo
echo "==> 4. the same command again: ${cmd[*]}"
rc=0
"${cmd[@]}" > >(tee "$out/second") 2> >(tee "$out/second.err" >&2) || rc=$?
wait   # for the tee processes
if [ $rc -ne 0 ]; then
    echo "FAIL: the resumed run exited with status $rc"
    exit 1
fi
final=$(tail -n 1 "$out/second")

echo
echo "==> 5. after the resumed run finished: $python -m dart log --store $store -n 3"
"$python" -m dart log --store "$store" -n 3

echo
echo "reference: $reference"
echo "resumed:   $final"
if ! grep -q "dart: resuming" "$out/second.err"; then
    echo "FAIL: the second run did not resume (no 'dart: resuming' on stderr)"
    exit 1
elif [ "$final" != "$reference" ]; then
    echo "FAIL: the resumed run ended differently from the uninterrupted run"
    exit 1
fi
echo "PASS: killed with SIGKILL, resumed, and finished with the same parameters as an uninterrupted run"
