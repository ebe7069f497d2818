#!/bin/sh
# Installs web/demo's pinned npm packages when missing and rebuilds dist/
# (go generate ./web/demo runs this; --check only verifies that dist/ is current).
set -eu
cd "$(dirname "$0")"
if [ ! -x node_modules/.bin/esbuild ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
node build.mjs "$@"
