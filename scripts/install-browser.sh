#!/usr/bin/env bash
# Install Debian's Chromium, ChromeDriver and Node.js for the tests of the leaderboard's HTML page: its sort
# script run by node (tests/leaderboard/test_html.py), and the page opened, screenshotted and sorted by
# real clicks in headless Chromium (test_page_in_headless_chromium). CI runs this before the tests and
# makes a missing browser a failure (CXRBENCH_REQUIRE_BROWSER=1); elsewhere those tests are skipped without
# them. Idempotent. Needs root (apt-get). Usage: sudo bash scripts/install-browser.sh
set -euo pipefail
have() { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] && command -v node >/dev/null; }
versions() { echo "$(/usr/bin/chromium --version 2>/dev/null | head -1); $(/usr/bin/chromedriver --version | head -1); node $(node --version)"; }
if have; then
  echo "already installed: $(versions)"
  exit 0
fi
command -v apt-get >/dev/null || { echo "install-browser.sh: needs apt-get (Debian / Ubuntu); install Chromium + ChromeDriver at /usr/bin and Node.js yourself" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "install-browser.sh: needs root (apt-get): sudo bash $0" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium chromium-driver nodejs >/dev/null
echo "installed: $(versions)"
