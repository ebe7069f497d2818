package server_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/server/servertest"
)

// Frames are not HTML-escaped: a presence or storage value of `<` reaches
// the other members as `<`, and each frame stays within the limit that
// measured it plus the envelope. Before: encoding/json's default turned
// every `<` into \u003c, six times larger than what the limits measured.
func TestFramesNotHTMLEscaped(t *testing.T) {
	s := servertest.Start(t, nil)
	s.IgnoreTypes = []string{"presence:update"}
	a := s.DialUser("a", servertest.AllRooms)
	b := s.DialUser("b", servertest.AllRooms)
	for _, c := range []*servertest.Client{a, b} {
		c.Request(protocol.TypeRoomJoin, "j", map[string]any{"room_id": "esc"})
		c.Expect(protocol.TypeRoomState)
	}
	a.Expect(protocol.TypeRoomJoined) // b joined

	const presenceMax = 4096
	lt := strings.Repeat("<>&", 1350) // 4050 bytes
	// Sent by hand: encoding/json on the client side would escape too.
	a.Send(`{"type":"room:update_presence","id":"p","data":{"room_id":"esc","presence":{"s":"` + lt + `"}}}`)
	a.Expect(protocol.TypeRoomPresenceUpdated)
	f := b.Expect(protocol.TypeRoomPresenceUpdated)
	checkRaw(t, "room:presence_updated", f.Data, lt, presenceMax+512)

	// A late joiner's room:state carries the presence as sent.
	c := s.DialUser("c", servertest.AllRooms)
	c.Request(protocol.TypeRoomJoin, "j", map[string]any{"room_id": "esc"})
	f = c.Expect(protocol.TypeRoomState)
	checkRaw(t, "room:state", f.Data, lt, presenceMax+2048)
	a.Expect(protocol.TypeRoomJoined)
	b.Expect(protocol.TypeRoomJoined)

	// A storage batch reaches the members as sent.
	val := strings.Repeat("<", 30000)
	a.Send(`{"type":"room:update_storage","id":"s","data":{"room_id":"esc","ops":[{"op":"add","path":"/x","value":"` + val + `"}]}}`)
	a.Expect(protocol.TypeRoomStorageUpdated)
	f = b.Expect(protocol.TypeRoomStorageUpdated)
	checkRaw(t, "room:storage_updated", f.Data, val, len(val)+512)
	f = c.Expect(protocol.TypeRoomStorageUpdated)
	checkRaw(t, "room:storage_updated", f.Data, val, len(val)+512)

	// The stored document, in a late joiner's room:state and over REST, is
	// encoded the same way (jsonpatch's encoder, not encoding/json's
	// HTML-escaping default).
	d := s.DialUser("d", servertest.AllRooms)
	d.Request(protocol.TypeRoomJoin, "j", map[string]any{"room_id": "esc"})
	f = d.Expect(protocol.TypeRoomState)
	checkRaw(t, "room:state storage", f.Data, val, len(val)+3*presenceMax+4096)
	if code, body := s.Do("GET", "/api/rooms/esc/storage", servertest.APIKey, nil); code != 200 {
		t.Fatalf("GET storage: %d %s", code, body)
	} else {
		checkRaw(t, "GET storage", body, val, len(val)+512)
	}
}

func checkRaw(t *testing.T, what string, data []byte, want string, max int) {
	t.Helper()
	if bytes.Contains(data, []byte(`\u003c`)) || bytes.Contains(data, []byte(`\u0026`)) {
		t.Fatalf("%s is HTML-escaped (%d bytes)", what, len(data))
	}
	if !bytes.Contains(data, []byte(want)) {
		t.Fatalf("%s does not carry the value as sent", what)
	}
	if len(data) > max {
		t.Fatalf("%s data is %d bytes, want at most %d", what, len(data), max)
	}
}
