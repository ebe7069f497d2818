package cluster

import (
	"bytes"
	"testing"
)

// FuzzDecodeDelivery feeds arbitrary NATS payloads to the delivery decoder
// (any process that can publish on a cluster's user or all subject reaches
// it): it must never panic or allocate beyond the input, and what it
// accepts must encode back to the same delivery.
func FuzzDecodeDelivery(f *testing.F) {
	f.Add(encodeDelivery(kindUsers, "node-1", "conn-1", []string{"u"}, []byte(`{"type":"ping"}`)))
	f.Add(encodeDelivery(kindUsers, "n", "", []string{"u1", "u2"}, []byte(`{}`)))
	f.Add(encodeDelivery(kindAll, "n", "x", nil, nil))
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add([]byte{2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f})
	f.Add([]byte{2, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{3, 0, 0, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := decodeDelivery(b)
		if err != nil {
			return
		}
		if len(d.users) > len(b) {
			t.Fatalf("%d users from %d bytes", len(d.users), len(b))
		}
		again := encodeDelivery(d.kind, d.node, d.id, d.users, d.frame)
		d2, err := decodeDelivery(again)
		if err != nil || d2.kind != d.kind || d2.node != d.node || d2.id != d.id || len(d2.users) != len(d.users) || !bytes.Equal(d2.frame, d.frame) {
			t.Fatalf("round trip changed the delivery: %+v → %+v (%v)", d, d2, err)
		}
	})
}
