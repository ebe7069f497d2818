#!/bin/sh
# Installs web/media's pinned dependencies and bundles the adapter page
# (dist/page.js + dist/index.html). CI calls this before the browser test.
set -eu
cd "$(dirname "$0")"
if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
mkdir -p dist
npx esbuild adapter-page.js --bundle --format=iife --target=es2020 --outfile=dist/page.js --log-level=warning
cp index.html dist/index.html
echo "web/media: built dist/page.js"
