#!/bin/bash
# parley webhooks verify with hostile stdin. Prints command, exit code, stdout/stderr (cut).
B=${PARLEY_BIN:-/tmp/parley-review}
S=whsec-review-0123456789abcdef
D=$(mktemp -d)
sign() { # sign T BODYFILE -> header value
  printf 't=%s,v1=%s' "$1" "$( (printf '%s.' "$1"; cat "$2") | openssl dgst -sha256 -hmac "$S" -hex | sed 's/.*= //')"
}
now=$(date +%s)
printf '{"id":"e1","event":"room.started","created_at":"2026-11-30T10:00:00.000Z","data":{"room_id":"r"}}' > $D/body
H=$(sign $now $D/body)
{ printf 'POST /hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nParley-Signature: %s\r\nContent-Length: %s\r\n\r\n' "$H" $(stat -c %s $D/body); cat $D/body; } > $D/req
run() { local name=$1; shift; local out; out=$("$@" 2>&1); local rc=$?; printf '%-44s rc=%s  %s\n' "$name" $rc "$(echo "$out" | head -c 300 | tr '\n' '|')"; }
run "valid captured request" sh -c "$B webhooks verify --secret $S < $D/req"
run "valid, header line + body" sh -c "{ printf 'Parley-Signature: %s\n' '$H'; cat $D/body; } | $B webhooks verify --secret $S"
run "valid, --signature + body" sh -c "$B webhooks verify --secret $S --signature '$H' < $D/body"
run "replay of the same request (2nd time)" sh -c "$B webhooks verify --secret $S < $D/req"
run "wrong secret" sh -c "$B webhooks verify --secret wrong-secret-0123456789 < $D/req"
run "body + trailing newline (echo)" sh -c "{ cat $D/body; echo; } | $B webhooks verify --secret $S --signature '$H'"
run "changed body" sh -c "sed 's/room.started/room.finished/' $D/body | $B webhooks verify --secret $S --signature '$H'"
old=$((now-3600)); Ho=$(sign $old $D/body)
run "stale timestamp (1 h)" sh -c "$B webhooks verify --secret $S --signature '$Ho' < $D/body"
run "stale timestamp, --tolerance 0" sh -c "$B webhooks verify --secret $S --tolerance 0 --signature '$Ho' < $D/body"
fut=$((now+3600)); Hf=$(sign $fut $D/body)
run "future timestamp (+1 h)" sh -c "$B webhooks verify --secret $S --signature '$Hf' < $D/body"
run "no header at all (body only)" sh -c "$B webhooks verify --secret $S < $D/body"
run "empty stdin" sh -c "$B webhooks verify --secret $S < /dev/null"
head -c 4096 /dev/urandom > $D/bin
run "4 KB binary" sh -c "$B webhooks verify --secret $S < $D/bin"
run "binary body with --signature" sh -c "$B webhooks verify --secret $S --signature '$H' < $D/bin"
{ printf 'POST /hook HTTP/1.1\r\nHost: x\r\nParley-Signature: %s\r\n\r\n' "$H"; head -c 10485760 /dev/zero | tr '\0' 'a'; } > $D/big
run "10 MB request" sh -c "$B webhooks verify --secret $S < $D/big"
{ printf 'Parley-Signature: %s\n' "$H"; head -c 10485760 /dev/urandom; } > $D/bigbin
run "header line + 10 MB binary" sh -c "$B webhooks verify --secret $S < $D/bigbin"
{ printf 'POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello'; } > $D/nohdr
run "request without Parley-Signature" sh -c "$B webhooks verify --secret $S < $D/nohdr"
{ printf 'POST /hook HTTP/1.1\r\nHost: x\r\nParley-Signature: %s\r\nContent-Length: 99999\r\n\r\n' "$H"; cat $D/body; } > $D/shortcl
run "Content-Length larger than body" sh -c "$B webhooks verify --secret $S < $D/shortcl"
{ printf 'POST /hook HTTP/1.1\r\nHost: x\r\nParley-Signature: %s\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n' "$H" $(stat -c %s $D/body); cat $D/body; printf '\r\n0\r\n\r\n'; } > $D/chunked
run "chunked request" sh -c "$B webhooks verify --secret $S < $D/chunked"
{ printf 'POST /hook HTTP/1.1\r\nHost: x\r\nParley-Signature: %s\r\nContent-Length: 3\r\n\r\n' "$H"; cat $D/body; } > $D/shortbody
run "Content-Length cuts the body" sh -c "$B webhooks verify --secret $S < $D/shortbody"
for h in 't=' 'v1=' 't=abc,v1=00' "t=$now" "t=$now,t=$now,${H#*,}" "t=-5,${H#*,}" "t=+$now,${H#*,}" "t=99999999999999999999,${H#*,}" "$(printf 'x%.0s' $(seq 3000))" "${H},v1=zz" "t=$now,v1=${H#*v1=}00" " $H " "v1=${H#*v1=},t=$now"; do
  run "header '$(echo "$h" | head -c 40)'" sh -c "$B webhooks verify --secret $S --signature '$h' < $D/body"
done
run "--tolerance -1s" sh -c "$B webhooks verify --secret $S --tolerance -1s < $D/req"
run "no --secret" sh -c "env -u PARLEY_WEBHOOK_SECRET $B webhooks verify < $D/req"
run "--json valid" sh -c "$B webhooks verify --secret $S --json < $D/req"
run "--json stale" sh -c "$B webhooks verify --secret $S --json --signature '$Ho' < $D/body"
head -c $((65*1024*1024)) /dev/zero > $D/huge
run "65 MiB of zeros (over the 64 MiB read cap)" sh -c "$B webhooks verify --secret $S --signature '$H' < $D/huge"
rm -rf $D
