# Sourced by .ci/run and benchmarks/run: a virtual environment of the project's own, holding only
# what pyproject.toml declares, so that nothing installed machine-wide (or by hand) can hide a
# missing declaration. Rebuilt from nothing whenever pyproject.toml changes.
#   source .ci/venv.sh DIR EXTRAS      e.g. source .ci/venv.sh .ci/venv test,operator
# Leaves the environment's bin/ first on PATH.

venv_dir="$1"
venv_extras="$2"

if ! command -v python3 >/dev/null; then
    echo "error: python3 is not on PATH; install Python 3.11 or newer" >&2
    exit 1
fi
if ! python3 -c 'import sys; raise SystemExit(sys.version_info < (3, 11))'; then
    echo "error: $(python3 --version 2>&1) is too old; kubevirt-dynamic-memory needs Python 3.11 or newer" >&2
    exit 1
fi
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then  # Debian and Ubuntu ship venv apart
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    else
        echo "error: python3 cannot create virtual environments; install python3-venv (sudo apt-get install python3-venv)" >&2
        exit 1
    fi
fi

stamp="$(cat pyproject.toml | sha256sum | cut -c1-16)-$(python3 -c 'import sys; print(sys.version.split()[0])')"
if [ "$(cat "$venv_dir/.stamp" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$venv_dir"
    python3 -m venv "$venv_dir"
    "$venv_dir/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$venv_dir/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[$venv_extras]"
    echo "$stamp" > "$venv_dir/.stamp"
else  # the same declarations: only the project itself is reinstalled (editable: nothing to copy)
    "$venv_dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e .
fi
export PATH="$PWD/$venv_dir/bin:$PATH"
export VIRTUAL_ENV="$PWD/$venv_dir"
hash -r
