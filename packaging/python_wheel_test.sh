#!/usr/bin/env bash
# The Python package as a Python developer gets it: for each interpreter
# (python3 on PATH, and Debian's /usr/bin/python3 when that is another one),
# builds a wheel from client/python with pip, the interpreter's setuptools
# and Debian's wheel (offline: no PyPI), installs it into a fresh virtualenv, and runs the
# Python tests against that installed module with the real PostgreSQL and
# daemon (tests/python_test with TC_TEST_PYTHON).
#
#   packaging/python_wheel_test.sh BUILD_DIR     (packaging/test.sh: build/ci)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
build=${1:?usage: packaging/python_wheel_test.sh BUILD_DIR}
wheels=/usr/share/python-wheels
if ! ls "$wheels"/wheel-*.whl >/dev/null 2>&1 || [ ! -e /usr/include/python3*/Python.h ]; then
  [ "$(id -u)" -eq 0 ] || { echo "need python3-wheel-whl python3-venv python3-dev (apt-get install)"; exit 1; }
  apt-get install -y -qq python3-wheel-whl python3-venv python3-dev >/dev/null
fi
[ -n "${TC_PG_ROOT:-}" ] && [ -n "${TC_TEST_DIR:-}" ] || { echo "TC_PG_ROOT and TC_TEST_DIR must be set"; exit 1; }

pythons=(/usr/bin/python3)
real() { "$1" -c 'import os, sys; print(os.path.realpath(sys.executable))'; }
on_path=$(command -v python3 || true)
if [ -n "$on_path" ] && [ "$(real "$on_path")" != "$(real /usr/bin/python3)" ]; then
  pythons+=("$(real "$on_path")")
fi

work=$(mktemp -d "$TC_TEST_DIR/python-wheel-XXXXXX")
n=0
for py in "${pythons[@]}"; do
  n=$((n + 1))
  echo "-- $py ($("$py" --version 2>&1))"
  # The build environment: the interpreter's own venv (ensurepip gives it
  # setuptools; Debian's own is patched for Debian's interpreter only) plus
  # Debian's wheel, so that --no-build-isolation finds bdist_wheel.
  "$py" -m venv "$work/build-$n"
  "$work/build-$n/bin/python" -m pip install -q --no-index "$wheels"/wheel-*.whl
  rm -rf client/python/build  # pip builds in place: no objects of another interpreter
  "$work/build-$n/bin/python" -m pip wheel -q --no-build-isolation --no-deps -w "$work/wheels-$n" ./client/python
  wheel=$(ls "$work/wheels-$n"/tenantcache-*.whl)
  echo "built $(basename "$wheel")"
  # A fresh virtualenv with nothing but the wheel.
  "$py" -m venv "$work/venv-$n"
  "$work/venv-$n/bin/python" -m pip install -q --no-index --no-deps "$wheel"
  TC_TEST_PYTHON="$work/venv-$n/bin/python" "$build/tests/python_test"
done
rm -rf "$work" client/python/build
