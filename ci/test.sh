#!/usr/bin/env bash
# The test command: set up .venv-3.12 and .venv-3.13 (ci/setup.sh), then run the
# whole test suite with each. Fails if either Python fails. Extra arguments go
# to pytest, e.g. `bash ci/test.sh -x -k store`.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

pythons=(3.12 3.13)
now() { date +%s.%N; }
took() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.0f s", b - a }'; }

start=$(now)
t=$(now)
bash ci/setup.sh "${pythons[@]}" || { echo "ci/test.sh: setup failed" >&2; exit 1; }
setup_time=$(took "$t")

summary=()
failed=0
# The resume corpus's kill chains under a time interval exercise the same code
# paths as its --every 0 chains on every Python; they run on the first Python
# only, to keep the whole run short (DART_TEST_ALL=1 runs them on both).
only_first=(-k "not test_kill_and_resume_time_interval")
for v in "${pythons[@]}"; do
    extra=()
    if [ "$v" != "${pythons[0]}" ] && [ -z "${DART_TEST_ALL:-}" ]; then extra=("${only_first[@]}"); fi
    echo "==> [.venv-$v] python -m pytest tests -q${extra[*]:+ ${extra[*]}}${*:+ $*}"
    t=$(now)
    ".venv-$v/bin/python" -m pytest tests -q "${extra[@]}" "$@"
    rc=$?
    case $rc in
        0) result="passed" ;;
        5) result="FAILED (exit 5: no tests were collected)"; failed=1 ;;
        *) result="FAILED (pytest exit $rc)"; failed=1 ;;
    esac
    summary+=("Python $v: $result in $(took "$t")")
done

echo
echo "==> summary (setup $setup_time, total $(took "$start"))"
printf '%s\n' "${summary[@]}"
exit $failed
