#!/bin/sh
# review/srv.sh start|stop [extra serve flags...]: one parley server on 127.0.0.1:7880
# (binary $PARLEY_BIN, default /tmp/parley-review), data in /tmp/rv/data, log /tmp/rv/srv.log.
set -e
BIN=${PARLEY_BIN:-/tmp/parley-review}
mkdir -p /tmp/rv
case "$1" in
start)
  shift
  [ -f /tmp/rv/srv.pid ] && kill "$(cat /tmp/rv/srv.pid)" 2>/dev/null && sleep 1 || true
  PARLEY_AUTH_SECRET=${PARLEY_AUTH_SECRET:-$(cat /tmp/rv/secret)} PARLEY_DATA_DIR=${PARLEY_DATA_DIR:-/tmp/rv/data} \
    "$BIN" serve "$@" >/tmp/rv/srv.log 2>&1 &
  echo $! >/tmp/rv/srv.pid
  for i in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:7880/healthz 2>/dev/null && break; sleep 0.1; done
  echo "started pid $(cat /tmp/rv/srv.pid)";;
stop)
  [ -f /tmp/rv/srv.pid ] && { kill -INT "$(cat /tmp/rv/srv.pid)" 2>/dev/null || true; sleep 1; rm -f /tmp/rv/srv.pid; echo stopped; } || echo "not running";;
esac
