#!/usr/bin/env bash
# Installs everything the test suite needs into .venv (and the system packages it uses), then runs pytest.
# The PostgreSQL tests start a throwaway server themselves from Debian's postgresql package.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v pg_ctl >/dev/null && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    echo "installing Debian's postgresql (the tests start a throwaway server from it)…" >&2
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
    # The package's own cluster is not needed: the tests run their own on a free loopback port.
    $sudo sh -c 'command -v pg_ctlcluster >/dev/null && pg_ctlcluster --skip-systemctl-redirect "$(ls /usr/lib/postgresql | sort -n | tail -1)" main stop' 2>/dev/null || true
fi
if ! command -v chromium >/dev/null; then
    echo "installing Debian's chromium (the dashboard's browser test drives it with Playwright)…" >&2
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
# Static checks first: lint and strict typing of the shipped packages (settings in pyproject.toml).
.venv/bin/ruff check gateway providers
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
