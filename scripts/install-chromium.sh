#!/usr/bin/env bash
# The browser test drives Debian's chromium (Playwright's own browser download is not used).
# Installs it when missing; a no-op when it is there.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "The browser test needs /usr/bin/chromium; install Chromium with your package manager." >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
echo "Installing Debian's chromium for the browser test..."
$sudo apt-get install -y --no-install-recommends chromium >/dev/null ||
    { $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends chromium >/dev/null; }
