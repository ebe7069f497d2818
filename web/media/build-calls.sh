#!/bin/sh
# Bundles the calls test page: web/client/src/calls.ts (the SDK's calls
# layer, straight from its TypeScript source) + calls-page.js into
# OUT/calls.js and OUT/calls.html (OUT defaults to dist). Needs web/media's
# node_modules (build.sh): mediasoup-client and esbuild come from there.
set -eu
cd "$(dirname "$0")"
out="${1:-dist}"
mkdir -p "$out"
# calls.ts lives outside web/media: NODE_PATH lets it find mediasoup-client here.
NODE_PATH="$PWD/node_modules" ./node_modules/.bin/esbuild calls-page.js --bundle --format=iife \
  --target=es2020 --outfile="$out/calls.js" --log-level=warning
cp calls.html "$out/calls.html"
echo "web/media: built $out/calls.js"
