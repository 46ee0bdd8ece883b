#!/usr/bin/env bash
# Installs what tests/test_browser.py drives: Debian's headless `chromium` and its matching
# `chromium-driver` (/usr/bin/chromium, /usr/bin/chromedriver). Does nothing when both exist.
# `make test` runs it. Without apt-get or root it only warns: the browser test then skips on a
# workstation, and fails under CI (CI=true), where the browser must be present.
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    echo "browser test: $(/usr/bin/chromium --version 2>/dev/null || echo chromium) and chromedriver are installed"
    exit 0
fi

in_ci() { case "${CI:-}" in ""|0|false|no) return 1 ;; *) return 0 ;; esac; }
give_up() {
    echo "browser_setup: $1; install Debian's chromium and chromium-driver to run tests/test_browser.py" >&2
    if in_ci; then exit 1; fi
    exit 0  # a workstation without them still runs every other test; the browser test skips
}

command -v apt-get >/dev/null || give_up "apt-get not found (not a Debian/Ubuntu machine)"
if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    give_up "installing packages needs root (or passwordless sudo)"
fi

export DEBIAN_FRONTEND=noninteractive
echo "browser_setup: installing chromium and chromium-driver with apt-get"
# A fresh container has no package lists yet; refresh them only when the install needs it.
if ! "${SUDO[@]}" apt-get install -y --no-install-recommends chromium chromium-driver; then
    "${SUDO[@]}" apt-get update
    "${SUDO[@]}" apt-get install -y --no-install-recommends chromium chromium-driver || give_up "apt-get install failed"
fi
[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] || give_up "apt-get finished but /usr/bin/chromium or /usr/bin/chromedriver is missing"
echo "browser test: $(/usr/bin/chromium --version 2>/dev/null) installed"
