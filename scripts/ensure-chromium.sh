#!/usr/bin/env bash
# Make sure a headless browser is present for the HTML report tests (tests/report/test_browser.py):
# Debian's chromium package, installed with apt-get as root or through sudo, as ensure-data.sh does.
# Without apt-get (or root and sudo), or when the install fails, it says so and exits 0: the
# browser test then skips, naming this script.
set -uo pipefail

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"; else return 1; fi
}

browser="${DEEPSHRINK_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$browser" ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1 || ! { [ "$(id -u)" = 0 ] || command -v sudo >/dev/null 2>&1; }; then
  echo "chromium not found at $browser and apt-get (as root or through sudo) is not available:" \
       "the HTML report's browser test will be skipped (install Debian's chromium package to run it)" >&2
  exit 0
fi
echo "installing Debian package chromium (headless browser for the HTML report test) ..." >&2
if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1; then
  as_root apt-get update -qq >/dev/null 2>&1 || true   # stale package lists: refresh once and retry
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 \
    || echo "could not install chromium: the HTML report's browser test will be skipped" >&2
fi
exit 0
