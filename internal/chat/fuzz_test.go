package chat

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/parleyhq/parley/internal/protocol"
)

// FuzzDecodeChatData: the typing:* and presence:* data decoders (reached by
// every connected client) never panic, refuse only with bad_request, and
// what they accept is a valid room id / one of the five statuses.
func FuzzDecodeChatData(f *testing.F) {
	for _, s := range []string{
		`{"room_id":"r1"}`, `{"room_id":""}`, `{"room_id":"a/b"}`, `{"room_id":1}`, `{"room_id":"r","x":1}`,
		`{"presence":"online"}`, `{"presence":"invisible"}`, `{"presence":"ONLINE"}`, `{"presence":null}`,
		`null`, `[]`, `{}`, `"x"`, `{"room_id":"\ud800"}`, "{\"room_id\":\"r\xff\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		check := func(err error) {
			var pe *protocol.Error
			if err != nil && (!errors.As(err, &pe) || pe.Code != protocol.CodeBadRequest) {
				t.Fatalf("error %v for %q", err, b)
			}
		}
		room, err := decodeTyping(json.RawMessage(b))
		check(err)
		if err == nil && !protocol.ValidRoomID(room) {
			t.Fatalf("accepted room id %q", room)
		}
		status, err := decodePresence(json.RawMessage(b))
		check(err)
		if err == nil && !ValidStatus(status) {
			t.Fatalf("accepted status %q", status)
		}
	})
}
