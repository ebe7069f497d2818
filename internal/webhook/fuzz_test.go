package webhook

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
	"time"
)

// FuzzVerify: any header and body (what `parley webhooks verify` and a
// receiver read from the network) is refused or accepted without a panic,
// and a header is accepted only when one of its v1 values is the HMAC that
// Sign makes for its timestamp and the body with the secret.
func FuzzVerify(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"id":"1","event":"room.started","created_at":"x","data":{}}`)
	f.Add(Sign(secret, now, body), body)
	f.Add("v0=1,"+Sign(secret, now, body)+",v1="+strings.Repeat("ab", 32), body)
	f.Add("t=1,v1=00", []byte("x"))
	f.Add("t=1800000000,v1="+strings.Repeat("0", 64), body)
	f.Add("", []byte{})
	f.Fuzz(func(t *testing.T, header string, b []byte) {
		_, err := Verify(secret, header, b, 0, now)
		if err != nil {
			return
		}
		sig, perr := ParseSignature(header)
		if perr != nil {
			t.Fatalf("verified an unparsable header %q: %v", header, perr)
		}
		want := Sign(secret, time.Unix(sig.Timestamp, 0), b)
		mac, _ := hex.DecodeString(want[strings.Index(want, "v1=")+3:])
		for _, v := range sig.V1 {
			if bytes.Equal(v, mac) {
				return
			}
		}
		t.Fatalf("verified %q without the right v1", header)
	})
}
