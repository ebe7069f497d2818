#!/bin/sh
# Installs web/media's pinned dependencies and bundles the adapter page
# (dist/page.js + dist/index.html) and the calls page (dist/calls.js +
# dist/calls.html, build-calls.sh). CI calls this before the browser tests.
set -eu
cd "$(dirname "$0")"
if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
mkdir -p dist
npx esbuild adapter-page.js --bundle --format=iife --target=es2020 --outfile=dist/page.js --log-level=warning
cp index.html dist/index.html
./build-calls.sh dist
echo "web/media: built dist/page.js"
