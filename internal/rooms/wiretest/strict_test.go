package wiretest_test

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/server/servertest"
)

// dupBatches each hold an object with two members of the same name.
var dupBatches = []string{
	`[{"op":"add","path":"/d","value":{"a":1,"a":2}}]`,
	`[{"op":"add","path":"/e","value":"x","value":"y"}]`,
	`[{"op":"add","op":"remove","path":"/d","value":1}]`,
	`[{"op":"add","path":"/f","path":"/g","value":1}]`,
	`[{"op":"add","path":"/h","value":1},{"op":"add","path":"/i","value":{"x":[{"k":1,"\u006b":2}]}}]`,
	`[{"op":"add","path":"/j","value":{"é":1,"\u00e9":1}}]`,
	`[{"op":"remove","path":"/k","extra":1,"extra":1}]`,
}

// sendRaw sends data as the data of a {type, id} request, byte for byte.
func sendRaw(c *servertest.Client, typ, id, data string) {
	c.T.Helper()
	c.Send(fmt.Sprintf(`{"type":%q,"id":%q,"data":%s}`, typ, id, data))
}

// plain decodes raw JSON for comparisons by value.
func plain(t *testing.T, raw []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("decode %s: %v", raw, err)
	}
	return v
}

// getStorage is GET /api/rooms/{room}/storage.
func getStorage(t *testing.T, s *servertest.Server, room string) storageState {
	t.Helper()
	code, body := s.Do("GET", "/api/rooms/"+room+"/storage", servertest.APIKey, nil)
	if code != 200 {
		t.Fatalf("GET storage: %d %s", code, body)
	}
	var st storageState
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestRoomStorageDuplicateNames: a batch with a duplicate member name
// anywhere is refused with bad_request over WebSocket and REST, changes
// nothing and reaches no one; accepted batches are broadcast exactly as
// they are stored.
func TestRoomStorageDuplicateNames(t *testing.T) {
	s := startRooms(t, nil)
	a := s.DialUser("alice", servertest.AllRooms)
	b := s.DialUser("bob", servertest.AllRooms)
	join(a, "r", nil)
	join(b, "r", nil)
	a.Expect(protocol.TypeRoomJoined)
	for i, ops := range dupBatches {
		id := fmt.Sprintf("dup%d", i)
		sendRaw(a, protocol.TypeRoomUpdateStorage, id, `{"room_id":"r","ops":`+ops+`}`)
		if e := a.ExpectError(protocol.CodeBadRequest, id); !strings.Contains(e.Message, "same name") {
			t.Errorf("batch %s: error %q does not name the problem", ops, e.Message)
		}
		code, body := s.Do("PATCH", "/api/rooms/r/storage", servertest.APIKey, ops)
		if code != 400 || !strings.Contains(string(body), protocol.CodeBadRequest) {
			t.Errorf("REST PATCH %s: %d %s, want 400 bad_request", ops, code, body)
		}
	}
	a.ExpectNothing()
	b.ExpectNothing()
	if st := getStorage(t, s, "r"); st.Version != 0 || string(st.Data) != `{}` {
		t.Fatalf("after refused batches: version %d, data %s", st.Version, st.Data)
	}

	// Valid batches (same names in different objects, escaped names) are
	// accepted, and what everyone is sent is what a reload returns.
	good := `[{"op":"add","path":"/d","value":{"\u0061":1,"b":[{"k":1},{"k":2}],"c":{"k":{"k":3}}}},` +
		`{"op":"add","path":"/e","value":"x"}]`
	sent := write(a, "r", good)
	if sent.Version != 1 {
		t.Fatalf("first accepted batch is version %d", sent.Version)
	}
	var seen storageUpdated
	b.ExpectInto(protocol.TypeRoomStorageUpdated, &seen)
	if string(seen.Ops) != string(sent.Ops) {
		t.Fatalf("broadcast ops differ: %s vs %s", seen.Ops, sent.Ops)
	}
	restOps := `[{"op":"add","path":"/d/c/k/j","value":{"m":[1,{"m":2}]}}]`
	if code, body := s.Do("PATCH", "/api/rooms/r/storage", servertest.APIKey, restOps); code != 200 {
		t.Fatalf("REST PATCH: %d %s", code, body)
	}
	var restSeen storageUpdated
	b.ExpectInto(protocol.TypeRoomStorageUpdated, &restSeen)
	a.ExpectInto(protocol.TypeRoomStorageUpdated, &seen)
	if restSeen.Version != 2 || string(seen.Ops) != string(restSeen.Ops) {
		t.Fatalf("REST batch broadcast as version %d, %s / %s", restSeen.Version, restSeen.Ops, seen.Ops)
	}
	want := map[string]any{
		"d": map[string]any{"a": 1.0, "b": []any{map[string]any{"k": 1.0}, map[string]any{"k": 2.0}},
			"c": map[string]any{"k": map[string]any{"k": 3.0, "j": map[string]any{"m": []any{1.0, map[string]any{"m": 2.0}}}}}},
		"e": "x",
	}
	// The broadcast values, decoded by any parser, build the stored document.
	var ops1, ops2 []struct {
		Value json.RawMessage `json:"value"`
	}
	if json.Unmarshal(sent.Ops, &ops1) != nil || json.Unmarshal(restSeen.Ops, &ops2) != nil {
		t.Fatal("decode broadcast ops")
	}
	d := plain(t, ops1[0].Value).(map[string]any)
	d["c"].(map[string]any)["k"].(map[string]any)["j"] = plain(t, ops2[0].Value)
	if fromOps := map[string]any{"d": d, "e": plain(t, ops1[1].Value)}; !reflect.DeepEqual(fromOps, want) {
		t.Fatalf("broadcast ops build %v, want %v", fromOps, want)
	}
	st := getStorage(t, s, "r")
	if st.Version != 2 || !reflect.DeepEqual(plain(t, st.Data), want) {
		t.Fatalf("stored version %d %s, want %v", st.Version, st.Data, want)
	}
	c := s.DialUser("carol", servertest.AllRooms)
	if st := join(c, "r", nil); st.Version != 2 || !reflect.DeepEqual(plain(t, st.Data), want) {
		t.Fatalf("joiner sees version %d %s", st.Version, st.Data)
	}
	// Catch-up replays the same bytes that were broadcast.
	c2 := s.DialUser("carol", servertest.AllRooms)
	checkUpdates(t, join(c2, "r", ptr(0)).Updates, []storageUpdated{sent, restSeen})
}

// TestRoomPresenceDuplicateNames: presence with a duplicate member name
// at any depth is refused at join and at update; the broadcast merged
// presence is what a later joiner is sent.
func TestRoomPresenceDuplicateNames(t *testing.T) {
	s := startRooms(t, nil)
	a := s.DialUser("alice", servertest.AllRooms)
	b := s.DialUser("bob", servertest.AllRooms)
	join(b, "r", nil)
	for i, p := range []string{`{"x":1,"x":2}`, `{"x":{"y":1,"\u0079":2}}`, `{"x":[{"z":1,"z":1}]}`} {
		id := fmt.Sprintf("pj%d", i)
		sendRaw(a, protocol.TypeRoomJoin, id, `{"room_id":"r","presence":`+p+`}`)
		a.ExpectError(protocol.CodeBadRequest, id)
	}
	b.ExpectNothing()
	join(a, "r", nil)
	b.Expect(protocol.TypeRoomJoined)
	for i, p := range []string{`{"x":1,"x":2}`, `{"x":null,"x":1}`, `{"x":{"y":1,"y":2}}`} {
		id := fmt.Sprintf("pu%d", i)
		sendRaw(a, protocol.TypeRoomUpdatePresence, id, `{"room_id":"r","presence":`+p+`}`)
		a.ExpectError(protocol.CodeBadRequest, id)
	}
	b.ExpectNothing()
	sendRaw(a, protocol.TypeRoomUpdatePresence, "pu", `{"room_id":"r","presence":{"x":{"y":1,"z":[{"y":2}]},"w":1}}`)
	var upd struct {
		Presence json.RawMessage `json:"presence"`
	}
	a.ExpectInto(protocol.TypeRoomPresenceUpdated, &upd)
	b.ExpectInto(protocol.TypeRoomPresenceUpdated, &upd)
	c := s.DialUser("carol", servertest.AllRooms)
	c.Request(protocol.TypeRoomJoin, "j", map[string]any{"room_id": "r"})
	var st struct {
		Members []struct {
			UserID   string          `json:"user_id"`
			Presence json.RawMessage `json:"presence"`
		} `json:"members"`
	}
	c.ExpectInto(protocol.TypeRoomState, &st)
	for _, m := range st.Members {
		if m.UserID == "alice" && string(m.Presence) != string(upd.Presence) {
			t.Fatalf("joiner sees presence %s, broadcast was %s", m.Presence, upd.Presence)
		}
	}
	if want := `{"w":1,"x":{"y":1,"z":[{"y":2}]}}`; string(upd.Presence) != want {
		t.Fatalf("merged presence %s, want %s", upd.Presence, want)
	}
}

// TestRoomBroadcastRelaysDuplicateNames documents the choice for
// room:broadcast: the event is relayed byte for byte (not stored, not
// interpreted), duplicate names included.
func TestRoomBroadcastRelaysDuplicateNames(t *testing.T) {
	s := startRooms(t, nil)
	a := s.DialUser("alice", servertest.AllRooms)
	b := s.DialUser("bob", servertest.AllRooms)
	join(a, "r", nil)
	join(b, "r", nil)
	a.Expect(protocol.TypeRoomJoined)
	event := `{"k":1,"k":2}`
	sendRaw(a, protocol.TypeRoomBroadcast, "e", `{"room_id":"r","event":`+event+`}`)
	a.Expect(protocol.TypeAck)
	var got struct {
		Event json.RawMessage `json:"event"`
	}
	b.ExpectInto(protocol.TypeRoomEvent, &got)
	if string(got.Event) != event {
		t.Fatalf("event relayed as %s, sent %s", got.Event, event)
	}
}

// TestRoomStateMemberCount: room:state carries member_count, the number
// of clients in the room with the joiner, after joins, leaves and a
// repeated join.
func TestRoomStateMemberCount(t *testing.T) {
	s := startRooms(t, nil)
	count := func(c *servertest.Client) int {
		t.Helper()
		c.Request(protocol.TypeRoomJoin, "j", map[string]any{"room_id": "r"})
		var st struct {
			MemberCount *int              `json:"member_count"`
			Members     []json.RawMessage `json:"members"`
		}
		c.ExpectInto(protocol.TypeRoomState, &st)
		if st.MemberCount == nil {
			t.Fatal("room:state has no member_count")
		}
		if *st.MemberCount != len(st.Members) {
			t.Fatalf("member_count %d, %d members listed", *st.MemberCount, len(st.Members))
		}
		return *st.MemberCount
	}
	a := s.DialUser("alice", servertest.AllRooms)
	b := s.DialUser("bob", servertest.AllRooms)
	c := s.DialUser("carol", servertest.AllRooms)
	d := s.DialUser("alice", servertest.AllRooms) // the same user, another connection
	if n := count(a); n != 1 {
		t.Fatalf("first joiner: member_count %d", n)
	}
	if n := count(b); n != 2 {
		t.Fatalf("second joiner: member_count %d", n)
	}
	a.Expect(protocol.TypeRoomJoined)
	if n := count(c); n != 3 {
		t.Fatalf("third joiner: member_count %d", n)
	}
	a.Expect(protocol.TypeRoomJoined)
	b.Expect(protocol.TypeRoomJoined)
	leave(b, "r")
	a.Expect(protocol.TypeRoomLeft)
	c.Expect(protocol.TypeRoomLeft)
	if n := count(d); n != 3 {
		t.Fatalf("joiner after a leave: member_count %d", n)
	}
	a.Expect(protocol.TypeRoomJoined)
	c.Expect(protocol.TypeRoomJoined)
	if n := count(a); n != 3 {
		t.Fatalf("repeated join: member_count %d", n)
	}
	c.ExpectNothing() // a repeated join is not a new member
}
