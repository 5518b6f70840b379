#!/usr/bin/env bash
# Installs Debian's Chromium for the view tests (test/browser/*) when it is absent. The tests drive it
# with playwright-core at /usr/bin/chromium; Playwright's own browser download does not work here.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-browser: /usr/bin/chromium is absent and this is not root; install the Debian package chromium" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
/usr/bin/chromium --version >&2
