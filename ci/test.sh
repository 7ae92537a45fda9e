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

# The two Pythons' suites run at the same time, each with its own pytest
# temporary folder and log, printed when it ends: much of a test's time is
# spent waiting on child processes (start-up, kills, commits becoming durable).
# Measured on a 2-core machine, 2026-12-01: one after the other 1009 + 825 s
# (590 tests); at the same time, with 12 more corpus cases (671 tests), 1388 s. DART_TEST_SERIAL=1 runs
# them one after the other, streaming the output.
# The resume corpus's kill chains under a time interval exercise the same code
# paths as its --every 0 chains on every Python; each runs on one of the
# Pythons, shared out between them (DART_TEST_SHARE, see test_resume_corpus.py)
# so that both suites take about as long. DART_TEST_ALL=1 runs them all on both.
logs=$(mktemp -d)
run_suite() {  # $1: Python version, $2: its index; the rest: pytest arguments
    local v=$1 index=$2 share=""
    shift 2
    if [ -z "${DART_TEST_ALL:-}" ]; then share="$index/${#pythons[@]}"; fi
    echo "==> [.venv-$v] ${share:+DART_TEST_SHARE=$share }python -m pytest tests -q${*:+ $*}"
    local t=$(now)
    DART_TEST_SHARE=$share ".venv-$v/bin/python" -m pytest tests -q --basetemp="$logs/tmp-$v" "$@"
    echo $? >"$logs/rc-$v"
    took "$t" >"$logs/took-$v"
}
if [ -n "${DART_TEST_SERIAL:-}" ]; then
    for i in "${!pythons[@]}"; do run_suite "${pythons[$i]}" "$i" "$@"; done
else
    for i in "${!pythons[@]}"; do run_suite "${pythons[$i]}" "$i" "$@" >"$logs/log-${pythons[$i]}" 2>&1 & done
    printed=()
    while [ ${#printed[@]} -lt ${#pythons[@]} ]; do  # print each log as its suite ends
        for v in "${pythons[@]}"; do
            if [ -f "$logs/took-$v" ] && [[ " ${printed[*]} " != *" $v "* ]]; then
                cat "$logs/log-$v"
                printed+=("$v")
            fi
        done
        sleep 2
    done
    wait
fi

summary=()
failed=0
for v in "${pythons[@]}"; do
    rc=$(cat "$logs/rc-$v" 2>/dev/null || echo 1)
    case $rc in
        0) result="passed" ;;
        5) result="FAILED (exit 5: no tests were collected)"; failed=1 ;;
        *) result="FAILED (pytest exit $rc)"; failed=1 ;;
    esac
    summary+=("Python $v: $result in $(cat "$logs/took-$v" 2>/dev/null || echo "?")")
done
rm -rf "$logs"

echo
echo "==> summary (setup $setup_time, total $(took "$start"))"
printf '%s\n' "${summary[@]}"
exit $failed
