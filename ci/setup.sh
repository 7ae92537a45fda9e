#!/usr/bin/env bash
# Create (or reuse) the virtualenvs .venv-3.12 and .venv-3.13 in the repository
# root and install dart with its test extra into each (the test extra brings
# s3fs and moto[server]: the S3 tests start a moto server on 127.0.0.1).
#
#   bash ci/setup.sh            # both Pythons
#   bash ci/setup.sh 3.12       # only one
#
# The interpreters come from pyenv (newest installed 3.12.x / 3.13.x), or else
# from python3.12 / python3.13 on PATH. Re-runs reuse the virtualenvs and the
# installed dependencies (torch is large: it is only downloaded the first time)
# but always rebuild and reinstall dart itself, since its source has changed.
#
# Disk: torch's CUDA build takes about 6 GB in a virtualenv, 3 GB of it nvidia-*
# libraries that are the same for every Python: the second virtualenv gets them
# as hard links to the first one's (ci/share_pure_dists.py), and pip keeps no
# download cache, so both virtualenvs need about 9 GB.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(3.12 3.13)

now() { date +%s.%N; }
took() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
step() { echo "==> [$venv] $*"; }
# pip's output minus the notes about configured package locations that do not
# exist on this machine (harmless, one per package).
quiet_pip() { grep -v "^WARNING: Location '.*' is ignored: it is neither a file nor a directory" || true; }

# Print the path of a Python interpreter of version $1 (e.g. 3.12), or nothing.
find_python() {
    local want=$1 candidates=() v exe
    if command -v pyenv >/dev/null 2>&1; then
        for v in $(pyenv versions --bare 2>/dev/null | grep -E "^${want//./\\.}\.[0-9]+$" | sort -t. -k3,3nr); do
            exe=$(PYENV_VERSION=$v pyenv which python 2>/dev/null) && candidates+=("$exe")
        done
    fi
    exe=$(command -v "python$want" 2>/dev/null) && candidates+=("$exe")
    for exe in "${candidates[@]}"; do
        # A pyenv shim exists even when that version is not selected: try it.
        if [ "$("$exe" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$want" ]; then
            "$exe" -c 'import sys; print(sys.executable)'
            return 0
        fi
    done
    return 1
}

free_gib() { df -Pk . | awk 'NR == 2 { printf "%.1f", $4 / 1048576 }'; }
site_packages() { "$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }

first_venv=""
for want in "${versions[@]}"; do
    venv=.venv-$want
    total=$(now)

    t=$(now)
    if ! python=$(find_python "$want"); then
        echo "ci/setup.sh: no Python $want found: install it with pyenv (pyenv install $want)" \
             "or put python$want on PATH" >&2
        exit 1
    fi
    step "Python $want: $python ($(took "$t"))"

    t=$(now)
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import sys' 2>/dev/null \
        && [ "$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = "$want" ]; then
        step "reusing virtualenv $venv"
    else
        rm -rf "$venv"
        "$python" -m venv "$venv"
        step "created virtualenv $venv ($(took "$t"))"
    fi
    pip=("$venv/bin/python" -m pip --disable-pip-version-check)

    t=$(now)
    "${pip[@]}" install --quiet --upgrade pip 2>&1 | quiet_pip
    step "pip $("${pip[@]}" --version | cut -d' ' -f2) ($(took "$t"))"

    t=$(now)
    if "$venv/bin/python" -c 'import torch' 2>/dev/null; then
        step "installing dart + test extra (torch already installed: kept)"
    else
        if [ -n "$first_venv" ]; then
            step "sharing the CUDA libraries of $first_venv"
            "$venv/bin/python" ci/share_pure_dists.py "$(site_packages "$first_venv")" "$(site_packages "$venv")"
        fi
        step "installing dart + test extra (first time: this downloads torch, several GB;" \
             "$(free_gib) GiB free here)"
    fi
    # A local project is always rebuilt and reinstalled; dependencies that are
    # already satisfied (torch included) are left alone.
    if ! "${pip[@]}" install --no-cache-dir --quiet ".[test]" 2>&1 | quiet_pip; then
        echo "ci/setup.sh: installing into $venv failed ($(free_gib) GiB free on $root's disk now);" \
             "if pip said 'No space left on device', free some space (each virtualenv takes about 6 GB," \
             "3 GB with a first one to share CUDA libraries with) and run it again" >&2
        exit 1
    fi
    first_venv=$venv
    step "installed ($(took "$t"))"

    t=$(now)
    (cd /tmp && "$root/$venv/bin/python" -c \
        'import dart, torch, s3fs, moto; print("dart", dart.__version__, "from", dart.__file__, "| torch", torch.__version__, "| s3fs", s3fs.__version__, "| moto", moto.__version__)')
    step "import check ($(took "$t")); setup total $(took "$total")"
done
