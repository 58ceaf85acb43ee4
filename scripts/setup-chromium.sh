#!/usr/bin/env bash
# Installs what the dashboard's browser tests need (idempotent): Debian's
# chromium, node and npm, and playwright-core (a driver only: it downloads
# no browser) into crates/gantry-server/tests/browser/node_modules.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" fonts-dejavu-core
fi
dir="$root/crates/gantry-server/tests/browser"
if [ ! -f "$dir/node_modules/playwright-core/package.json" ]; then
  (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi
echo "chromium: $(chromium --version 2>/dev/null || echo missing); playwright-core: $(node -p "require('$dir/node_modules/playwright-core/package.json').version")"
