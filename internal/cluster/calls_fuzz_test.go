package cluster

import (
	"bytes"
	"testing"
)

// FuzzDecodeCallRequest feeds arbitrary payloads to the call request
// decoder (anything that can publish on <cluster>.node.<id>.calls reaches
// it): no panic, nothing allocated beyond the input, and what it accepts
// encodes back to the same request.
func FuzzDecodeCallRequest(f *testing.F) {
	f.Add(encodeCallRequest(CallRequest{Op: "media", RoomID: "r", ConnID: "c", UserID: "u", Node: "n1", Type: "media:join", ID: "1", Data: []byte(`{"room_id":"r"}`)}))
	f.Add(encodeCallRequest(CallRequest{Op: "disconnect", ConnID: "c"}))
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f})
	f.Add([]byte{2, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeCallRequest(b)
		if err != nil {
			return
		}
		r2, err := decodeCallRequest(encodeCallRequest(r))
		if err != nil || r2.Op != r.Op || r2.RoomID != r.RoomID || r2.ConnID != r.ConnID || r2.UserID != r.UserID ||
			r2.Node != r.Node || r2.Type != r.Type || r2.ID != r.ID || !bytes.Equal(r2.Data, r.Data) {
			t.Fatalf("round trip changed the request: %+v → %+v (%v)", r, r2, err)
		}
	})
}

// FuzzDecodeCallReply: the reply decoder (the reply subject of a call
// request), same properties.
func FuzzDecodeCallReply(f *testing.F) {
	f.Add(encodeCallReply(CallReply{Data: []byte(`{"ok":true}`)}))
	f.Add(encodeCallReply(CallReply{Code: "not_found", Message: "no call in room r"}))
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0})
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeCallReply(b)
		if err != nil {
			return
		}
		r2, err := decodeCallReply(encodeCallReply(r))
		if err != nil || r2.Code != r.Code || r2.Message != r.Message || !bytes.Equal(r2.Data, r.Data) {
			t.Fatalf("round trip changed the reply: %+v → %+v (%v)", r, r2, err)
		}
	})
}

// FuzzDecodeConnFrame: the connection frame decoder (<cluster>.node.<id>.conn).
func FuzzDecodeConnFrame(f *testing.F) {
	f.Add(encodeConnFrame("conn-1", []byte(`{"type":"media:room_closed","data":{"room_id":"r"}}`)))
	f.Add([]byte{})
	f.Add([]byte{1, 0})
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, b []byte) {
		id, frame, err := decodeConnFrame(b)
		if err != nil {
			return
		}
		id2, frame2, err := decodeConnFrame(encodeConnFrame(id, frame))
		if err != nil || id2 != id || !bytes.Equal(frame2, frame) {
			t.Fatalf("round trip changed the frame: %q %q → %q %q (%v)", id, frame, id2, frame2, err)
		}
	})
}
