#!/usr/bin/env bash
# Optional: install Debian's Chromium and ChromeDriver so that the test of the leaderboard's HTML page
# also runs in a real headless browser (tests/test_leaderboard_html.py::test_page_in_headless_chromium).
# Without them that one test is skipped (CXRBENCH_REQUIRE_BROWSER=1 turns the skip into a failure); the
# page is still checked in pure Python and, where Node.js is installed, by running its sort script.
# Needs root (apt-get). Usage: sudo bash scripts/install-browser.sh
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  echo "already installed: $(/usr/bin/chromium --version 2>/dev/null | head -1); $(/usr/bin/chromedriver --version | head -1)"
  exit 0
fi
command -v apt-get >/dev/null || { echo "install-browser.sh: needs apt-get (Debian / Ubuntu); install Chromium + ChromeDriver at /usr/bin yourself" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium chromium-driver
echo "installed: $(/usr/bin/chromium --version 2>/dev/null | head -1); $(/usr/bin/chromedriver --version | head -1)"
