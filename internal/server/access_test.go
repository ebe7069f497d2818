package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/server/servertest"
)

// The access policy through the real server (internal/access; PROTOCOL.md
// v1.1 §4, §5, §6, §7): the consequences of issue 9 §4 each get a test, and
// TestAccessMatrix runs every REST route and client message type for every
// role.

// register creates an account over REST and returns its access token and
// user id (a self-registered user: no grant, no membership).
func register(t *testing.T, s *servertest.Server, username string) (string, string) {
	t.Helper()
	tp := decodeAs[tokenPair](t, call(t, s, "POST", "/api/auth/register", "",
		map[string]any{"username": username, "password": "correct horse battery"}, http.StatusCreated))
	return tp.AccessToken, tp.User.ID
}

// storageVersion is the room's committed storage version, read on the
// server (it does not depend on anyone's permissions).
func storageVersion(t *testing.T, s *servertest.Server, room string) int64 {
	t.Helper()
	v, _, err := s.Srv.Rooms.Snapshot(context.Background(), room)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// outcome sends {type, id, data} and returns "ok" when the frame carrying
// that id is not an error, else the error code. Frames without the id
// (broadcasts, call events) are skipped.
func outcome(t *testing.T, c *servertest.Client, typ, id string, data any) string {
	t.Helper()
	c.Request(typ, id, data)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		f, ok := c.Next(time.Until(deadline))
		if !ok {
			break
		}
		if f.ID != id {
			continue
		}
		if f.Type == protocol.TypeError {
			return decodeAs[protocol.Error](t, f.Data).Code
		}
		return "ok"
	}
	t.Fatalf("%s: no reply to %s %q (close code %d)", c.UserID, typ, id, c.CloseCode())
	return ""
}

// TestAccessCreateCannotClaimRoomWithState: a self-registered user cannot
// create the record of a room that exists only through grants and has
// storage (nor of one with a live client): 409, nothing gained, and the
// real creation (API key) still works. Before: 201 and ownership.
func TestAccessCreateCannotClaimRoomWithState(t *testing.T) {
	s := servertest.Start(t, nil)
	writer := s.Token("backend-user", map[string]auth.Perm{"doc": auth.PermAll, "live": auth.PermAll})
	call(t, s, "PATCH", "/api/rooms/doc/storage", writer, `[{"op":"add","path":"/secret","value":"s3cr3t"}]`, http.StatusOK)
	c := s.Dial(writer)
	join(c, "live", "j", nil)

	mallory, _ := register(t, s, "mallory")
	for _, id := range []string{"doc", "live"} {
		refuse(t, s, "POST", "/api/rooms", mallory, map[string]any{"id": id, "name": "mine"}, http.StatusConflict, "conflict")
		refuse(t, s, "GET", "/api/rooms/"+id+"/storage", mallory, nil, http.StatusForbidden, "forbidden")
		m := s.Dial(mallory)
		m.Request(protocol.TypeRoomJoin, "j", map[string]any{"room_id": id})
		m.ExpectError(protocol.CodeForbidden, "j")
	}
	// A fresh id is still free for users; the API key may adopt a room
	// that has state.
	call(t, s, "POST", "/api/rooms", mallory, map[string]any{"id": "fresh", "name": "mine"}, http.StatusCreated)
	got := decodeAs[roomJSON](t, call(t, s, "POST", "/api/rooms", servertest.APIKey, map[string]any{"id": "doc", "name": "Doc"}, http.StatusCreated))
	if got.OwnerID != "" {
		t.Fatalf("API key room has owner %q", got.OwnerID)
	}
	if v := storageVersion(t, s, "doc"); v != 1 {
		t.Fatalf("storage version %d after refused creations, want 1", v)
	}
}

// TestAccessWriteOnlyGrant: a write-only grant may write storage over REST
// but may not read it, neither by GET, nor through test ops, nor through
// error texts; over the WebSocket it cannot join (join needs read).
// Before: a test op with a write-only grant answered test_failed or 200.
func TestAccessWriteOnlyGrant(t *testing.T) {
	s := servertest.Start(t, nil)
	key := servertest.APIKey
	call(t, s, "PATCH", "/api/rooms/doc/storage", key, `[{"op":"add","path":"/k","value":"s3cr3t"},{"op":"add","path":"/arr","value":[1,2,3]}]`, http.StatusOK)
	wo := s.Token("wo", map[string]auth.Perm{"doc": auth.PermWrite})

	refuse(t, s, "GET", "/api/rooms/doc/storage", wo, nil, http.StatusForbidden, "forbidden")
	for _, body := range []string{
		`[{"op":"test","path":"/k","value":"s3cr3t"}]`,
		`[{"op":"test","path":"/k","value":"guess"},{"op":"add","path":"/x","value":1}]`,
		`[{"op":"add","path":"/x","value":1},{"op":"test","path":"/k","value":"s3cr3t"}]`,
	} {
		refuse(t, s, "PATCH", "/api/rooms/doc/storage", wo, body, http.StatusForbidden, "forbidden")
	}
	if v := storageVersion(t, s, "doc"); v != 1 {
		t.Fatalf("refused batches changed storage: version %d", v)
	}
	call(t, s, "PATCH", "/api/rooms/doc/storage", wo, `[{"op":"add","path":"/x","value":1}]`, http.StatusOK)

	// Error texts name paths, never values (the array's length here).
	code, body := s.Do("PATCH", "/api/rooms/doc/storage", wo, `[{"op":"replace","path":"/arr/9","value":0}]`)
	if code != http.StatusBadRequest || strings.Contains(string(body), "length") || strings.Contains(string(body), "3)") {
		t.Fatalf("out of range: %d %s (want 400 without the array length)", code, body)
	}

	c := s.Dial(wo)
	c.Request(protocol.TypeRoomJoin, "j", map[string]any{"room_id": "doc"})
	c.ExpectError(protocol.CodeForbidden, "j")
	c.Request(protocol.TypeRoomUpdateStorage, "s", map[string]any{"room_id": "doc",
		"ops": []any{map[string]any{"op": "add", "path": "/y", "value": 1}}})
	c.ExpectError(protocol.CodeNotFound, "s")
}

// TestAccessRemovedMemberLeavesCall: removing a member over REST ends their
// call at once: the others get media:peer_left, the participant list drops
// them (so they get no media:new_producer), and they cannot rejoin; their
// call connection gets media:room_closed. Before: they stayed a
// participant; then, their connection got only room:left.
func TestAccessRemovedMemberLeavesCall(t *testing.T) {
	s := servertest.Start(t, mediaEnv())
	s.IgnoreTypes = []string{"presence:update", protocol.TypeRoomCallStarted, protocol.TypeRoomCallUpdated}
	alice, bob := s.Token("alice", nil), s.Token("bob", nil)
	createRoom(t, s, alice, "team", false)
	addMember(t, s, alice, "team", "bob")
	a, b, b2 := s.Dial(alice), s.Dial(bob), s.Dial(bob)
	join(b, "team", "rj", nil)
	call(t, s, "POST", "/api/rooms/team/call/start", alice, nil, http.StatusOK)
	var tc struct {
		SendTransport struct {
			ID string `json:"id"`
		} `json:"send_transport"`
	}
	a.Request("media:join", "mj", map[string]string{"room_id": "team"})
	a.Expect("media:router_capabilities")
	a.ExpectInto("media:transport_created", &tc)
	if got := outcome(t, b, "media:join", "mj", map[string]string{"room_id": "team"}); got != "ok" {
		t.Fatalf("bob media:join: %s", got)
	}
	produce := func(id string, ssrc int) {
		t.Helper()
		if got := outcome(t, a, "media:produce", id, map[string]any{"room_id": "team", "transport_id": tc.SendTransport.ID, "kind": "audio",
			"rtp_parameters": map[string]any{
				"mid":              id,
				"codecs":           []map[string]any{{"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000, "channels": 2, "parameters": map[string]any{}, "rtcpFeedback": []any{}}},
				"headerExtensions": []map[string]any{{"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 4, "encrypt": false, "parameters": map[string]any{}}},
				"encodings":        []map[string]any{{"ssrc": ssrc}},
				"rtcp":             map[string]any{"cname": "c", "reducedSize": true},
			}}); got != "ok" {
			t.Fatalf("produce %s: %s", id, got)
		}
	}
	// newProducers counts the media:new_producer frames bob gets before the
	// reply to a ping (everything sent to him before it is in order).
	newProducers := func() int {
		t.Helper()
		b.Request(protocol.TypePing, "quiet", nil)
		n := 0
		for {
			f, ok := b.Next(5 * time.Second)
			if !ok {
				t.Fatal("bob: no pong")
			}
			if f.Type == protocol.TypePong && f.ID == "quiet" {
				return n
			}
			if f.Type == "media:new_producer" {
				n++
			}
		}
	}
	produce("p1", 1111)
	if n := newProducers(); n != 1 {
		t.Fatalf("bob, a participant, got %d media:new_producer, want 1", n)
	}
	b.Request(protocol.TypeTypingStart, "ty", map[string]any{"room_id": "team"})
	expectAck(b, "ty")

	call(t, s, "DELETE", "/api/rooms/team/members/bob", alice, nil, http.StatusNoContent)
	// Alice sees bob leave the call and stop typing.
	var peerLeft, typingStop bool
	for !peerLeft || !typingStop {
		f, ok := a.Next(5 * time.Second)
		if !ok {
			t.Fatalf("after removal: peer_left %v typing:stop %v", peerLeft, typingStop)
		}
		switch {
		case f.Type == "media:peer_left" && strings.Contains(string(f.Data), b.ConnID):
			peerLeft = true
		case f.Type == protocol.TypeTypingStop && strings.Contains(string(f.Data), `"bob"`):
			typingStop = true
		}
	}
	// Bob's room client left with room:left, and his call connection is
	// told its call ended (media:room_closed, as on call/end) so that a
	// mediasoup-client app tears down.
	var roomLeft, roomClosed bool
	for !roomLeft || !roomClosed {
		f, ok := b.Next(5 * time.Second)
		if !ok {
			t.Fatalf("bob after removal: room:left %v media:room_closed %v", roomLeft, roomClosed)
		}
		switch f.Type {
		case protocol.TypeRoomLeft:
			roomLeft = true
		case protocol.TypeMediaRoomClosed:
			if string(f.Data) != `{"room_id":"team"}` {
				t.Fatalf("media:room_closed %s", f.Data)
			}
			roomClosed = true
		}
	}
	// His connection outside the call hears nothing of it.
	b2.ExpectNothing()
	produce("p2", 2222)
	if n := newProducers(); n != 0 {
		t.Fatalf("removed bob got %d media:new_producer", n)
	}
	parts := string(call(t, s, "GET", "/api/rooms/team/call/participants", alice, nil, http.StatusOK))
	if strings.Contains(parts, b.ConnID) || !strings.Contains(parts, a.ConnID) {
		t.Fatalf("participants after removal: %s", parts)
	}
	if got := outcome(t, b, "media:join", "mj2", map[string]string{"room_id": "team"}); got != protocol.CodeForbidden {
		t.Fatalf("removed member media:join: %s", got)
	}
	if got := outcome(t, b, protocol.TypeTypingStart, "ty2", map[string]any{"room_id": "team"}); got != protocol.CodeForbidden {
		t.Fatalf("removed member typing:start: %s", got)
	}
}

// TestAccessRESTPresenceSharedAudience: with --presence-audience shared,
// GET /api/presence shows a user who shares no room with the caller as
// offline, as presence:update frames do. Before: their real status.
func TestAccessRESTPresenceSharedAudience(t *testing.T) {
	s := servertest.Start(t, map[string]string{"PARLEY_PRESENCE_AUDIENCE": "shared"})
	alice, bob, carol := s.Token("alice", nil), s.Token("bob", nil), s.Token("carol", nil)
	createRoom(t, s, alice, "ab", false)
	addMember(t, s, alice, "ab", "bob")
	s.Dial(alice).ExpectNothing()
	s.Dial(carol).ExpectNothing()
	servertest.WaitFor(t, 5*time.Second, "alice and carol online to the API key", func() bool {
		got := presenceOf(t, s, servertest.APIKey, "alice", "carol")
		return got["alice"] == "online" && got["carol"] == "online"
	})
	got := presenceOf(t, s, bob, "alice", "carol")
	if got["alice"] != "online" || got["carol"] != "offline" {
		t.Fatalf("bob sees %v, want alice online and carol offline (no shared room)", got)
	}
	if own := presenceOf(t, s, carol, "carol"); own["carol"] != "online" {
		t.Fatalf("carol sees herself %v", own)
	}
}

// TestAccessUnknownRoomLooksForbidden: to someone who may not see it, a
// private room and an unknown one get the same status and the same body
// (with the id swapped), on every room route and message type. Before:
// chat answered 403 for the one and 404 for the other.
func TestAccessUnknownRoomLooksForbidden(t *testing.T) {
	s := servertest.Start(t, mediaEnv())
	s.IgnoreTypes = []string{"presence:update"}
	owner := s.Token("owner", nil)
	createRoom(t, s, owner, "priv", false)
	call(t, s, "POST", "/api/rooms/priv/call/start", owner, nil, http.StatusOK)
	eve := s.Token("eve", nil)
	routes := []struct {
		method, path string
		body         any
	}{
		{"GET", "/api/rooms/{id}", nil},
		{"POST", "/api/rooms/{id}/members", map[string]string{"user_id": "eve"}},
		{"DELETE", "/api/rooms/{id}/members/owner", nil},
		{"POST", "/api/rooms/{id}/join", nil},
		{"POST", "/api/rooms/{id}/leave", nil},
		{"GET", "/api/rooms/{id}/storage", nil},
		{"PATCH", "/api/rooms/{id}/storage", `[{"op":"add","path":"/x","value":1}]`},
		{"POST", "/api/rooms/{id}/messages", map[string]string{"content": "hi"}},
		{"GET", "/api/rooms/{id}/messages", nil},
		{"PATCH", "/api/rooms/{id}/messages/0190c6f0-0000-7000-8000-000000000000", map[string]string{"content": "x"}},
		{"DELETE", "/api/rooms/{id}/messages/0190c6f0-0000-7000-8000-000000000000", nil},
		{"POST", "/api/rooms/{id}/call/start", nil},
		{"POST", "/api/rooms/{id}/call/join", map[string]string{"connection_id": "x"}},
		{"POST", "/api/rooms/{id}/call/leave", nil},
		{"POST", "/api/rooms/{id}/call/end", nil},
		{"GET", "/api/rooms/{id}/call/participants", nil},
	}
	for _, r := range routes {
		c1, b1 := s.Do(r.method, strings.ReplaceAll(r.path, "{id}", "priv"), eve, r.body)
		c2, b2 := s.Do(r.method, strings.ReplaceAll(r.path, "{id}", "nope"), eve, r.body)
		if c1 != c2 || strings.ReplaceAll(string(b1), "priv", "nope") != string(b2) {
			t.Errorf("%s %s: private %d %s, unknown %d %s", r.method, r.path, c1, b1, c2, b2)
		}
	}
	e := s.Dial(eve)
	for _, typ := range []string{protocol.TypeRoomJoin, protocol.TypeTypingStart, protocol.TypeTypingStop, "media:join", "media:leave"} {
		var got [2]protocol.Envelope
		for i, room := range []string{"priv", "nope"} {
			e.Request(typ, "x", map[string]any{"room_id": room})
			got[i] = e.Expect(protocol.TypeError)
		}
		if strings.ReplaceAll(string(got[0].Data), "priv", "nope") != string(got[1].Data) {
			t.Errorf("%s: private %s, unknown %s", typ, got[0].Data, got[1].Data)
		}
	}
}

// --- the authorization matrix ---------------------------------------------

// The roles of the matrix, in the order they run (the API key last: some
// of its allowed requests change what the others would see).
const (
	rAnon     = "anonymous"
	rStranger = "self-registered non-member"
	rRead     = "grant read"
	rWrite    = "grant write-only"
	rPresence = "grant presence-only"
	rMember   = "member"
	rRemoved  = "removed member"
	rOwner    = "owner"
	rKey      = "API key"
)

var matrixRoles = []string{rAnon, rStranger, rRead, rWrite, rPresence, rMember, rRemoved, rOwner, rKey}

// expect builds role → status: def for every authenticated role, 401 for
// the anonymous caller, then the given (role, status) pairs.
func expect(def int, pairs ...any) map[string]int {
	m := map[string]int{}
	for _, r := range matrixRoles {
		m[r] = def
	}
	m[rAnon] = http.StatusUnauthorized
	for i := 0; i+1 < len(pairs); i += 2 {
		m[pairs[i].(string)] = pairs[i+1].(int)
	}
	return m
}

// TestAccessMatrix: every REST route and every client message type against
// the private room "m" for every role, with the expected outcome. A refused
// request changes neither the storage nor the members.
func TestAccessMatrix(t *testing.T) {
	s := servertest.Start(t, mediaEnv())
	s.IgnoreTypes = []string{"presence:update"}
	ctx := context.Background()
	owner := s.Token("owner", nil)
	stranger, _ := register(t, s, "stranger")
	tokens := map[string]string{
		rAnon: "", rStranger: stranger, rKey: servertest.APIKey, rOwner: owner,
		rRead:     s.Token("reader", map[string]auth.Perm{"m": auth.PermRead}),
		rWrite:    s.Token("writer", map[string]auth.Perm{"m": auth.PermWrite}),
		rPresence: s.Token("presenter", map[string]auth.Perm{"m": auth.PermPresence}),
		rMember:   s.Token("member", nil),
		rRemoved:  s.Token("removed", nil),
	}
	createRoom(t, s, owner, "m", false)
	addMember(t, s, owner, "m", "member")
	addMember(t, s, owner, "m", "removed")
	call(t, s, "DELETE", "/api/rooms/m/members/removed", owner, nil, http.StatusNoContent)
	call(t, s, "PATCH", "/api/rooms/m/storage", owner, `[{"op":"add","path":"/seed","value":1}]`, http.StatusOK)
	call(t, s, "PATCH", "/api/rooms/g/storage", servertest.APIKey, `[{"op":"add","path":"/seed","value":1}]`, http.StatusOK)
	msg := post(t, s, owner, "m", map[string]any{"content": "by owner"})
	startCall := func() { call(t, s, "POST", "/api/rooms/m/call/start", owner, nil, http.StatusOK) }
	startCall()

	members := func() string {
		ms, err := s.Srv.Store.Members(ctx, "m")
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(ms, ",")
	}

	ok200, ok201, ok204 := http.StatusOK, http.StatusCreated, http.StatusNoContent
	const no = http.StatusForbidden
	rows := []struct {
		method, path string
		body         any
		want         map[string]int
		after        func(role string, status int) // restores what an allowed request changed
	}{
		{"POST", "/api/rooms", map[string]any{"id": "m", "name": "again"}, expect(http.StatusConflict), nil},
		{"POST", "/api/rooms", map[string]any{"id": "g", "name": "grant-only room with storage"}, expect(http.StatusConflict, rKey, ok201), nil},
		{"GET", "/api/rooms", nil, expect(ok200, rKey, no), nil},
		{"GET", "/api/rooms/m", nil, expect(no, rRead, ok200, rMember, ok200, rOwner, ok200, rKey, ok200), nil},
		{"GET", "/api/rooms/m/storage", nil, expect(no, rRead, ok200, rMember, ok200, rOwner, ok200, rKey, ok200), nil},
		{"PATCH", "/api/rooms/m/storage", `[{"op":"add","path":"/x","value":1}]`,
			expect(no, rWrite, ok200, rMember, ok200, rOwner, ok200, rKey, ok200), nil},
		{"PATCH", "/api/rooms/m/storage", `[{"op":"test","path":"/seed","value":1},{"op":"add","path":"/y","value":1}]`,
			expect(no, rMember, ok200, rOwner, ok200, rKey, ok200), nil},
		{"POST", "/api/rooms/m/members", map[string]string{"user_id": "extra"}, expect(no, rOwner, ok204, rKey, ok204), nil},
		{"DELETE", "/api/rooms/m/members/extra", nil, expect(no, rOwner, ok204, rKey, ok204), nil},
		{"POST", "/api/rooms/m/join", nil, expect(no, rMember, ok204, rOwner, ok204), nil},
		{"POST", "/api/rooms/m/messages", map[string]string{"content": "hi"}, expect(no, rMember, ok201, rOwner, ok201), nil},
		{"GET", "/api/rooms/m/messages", nil, expect(no, rMember, ok200, rOwner, ok200), nil},
		{"PATCH", "/api/rooms/m/messages/" + msg.ID, map[string]string{"content": "edited"}, expect(no, rOwner, ok200), nil},
		{"GET", "/api/rooms/m/call/participants", nil, expect(no, rMember, ok200, rOwner, ok200), nil},
		{"POST", "/api/rooms/m/call/start", nil, expect(no, rMember, ok200, rOwner, ok200), nil},
		{"POST", "/api/rooms/m/call/join", map[string]string{"connection_id": "not-mine"},
			expect(no, rMember, http.StatusNotFound, rOwner, http.StatusNotFound), nil},
		{"POST", "/api/rooms/m/call/leave", nil, expect(no, rMember, ok200, rOwner, ok200), nil},
		{"POST", "/api/rooms/m/call/end", nil, expect(no, rMember, ok200, rOwner, ok200),
			func(string, int) { startCall() }},
		{"GET", "/api/presence?user_ids=owner", nil, expect(ok200), nil},
		{"POST", "/api/tokens", map[string]string{"user_id": "x"}, expect(no, rKey, ok200), nil},
		{"GET", "/api/me", nil, expect(ok200, rKey, no), nil},
		{"DELETE", "/api/rooms/m/messages/" + msg.ID, nil, expect(no, rOwner, ok204), nil},
		{"POST", "/api/rooms/m/leave", nil, expect(ok204, rOwner, no, rKey, no),
			func(role string, _ int) {
				if role == rMember {
					if err := s.Srv.Store.AddMember(ctx, "m", "member"); err != nil {
						t.Fatal(err)
					}
				}
			}},
	}
	for _, row := range rows {
		for _, role := range matrixRoles {
			want := row.want[role]
			verBefore, membersBefore := storageVersion(t, s, "m"), members()
			code, body := s.Do(row.method, row.path, tokens[role], row.body)
			if code != want {
				t.Errorf("%s %s as %s: HTTP %d %s, want %d", row.method, row.path, role, code, body, want)
			}
			if code >= 400 {
				if v, m := storageVersion(t, s, "m"), members(); v != verBefore || m != membersBefore {
					t.Errorf("%s %s as %s: refused but changed storage %d→%d or members %q→%q",
						row.method, row.path, role, verBefore, v, membersBefore, m)
				}
			}
			if row.after != nil && code < 400 {
				row.after(role, code)
			}
		}
	}

	// The WebSocket: neither the anonymous caller nor the API key connects.
	for _, role := range []string{rAnon, rKey} {
		_, resp, err := websocket.DefaultDialer.Dial(s.WSURL+"?token="+tokens[role], nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("WebSocket as %s: %v %v, want HTTP 401", role, err, resp)
		}
	}
	room := map[string]any{"room_id": "m"}
	const ok, forbidden, notIn = "ok", protocol.CodeForbidden, protocol.CodeNotFound
	type msgRow struct {
		typ  string
		data any
		want map[string]string // by role; missing = forbidden
	}
	joined := map[string]string{rRead: ok, rMember: ok, rOwner: ok}
	member := map[string]string{rMember: ok, rOwner: ok}
	// Before joining (join needs read), a room message from a client that
	// is not in the room is not_found; after, forbidden when the client
	// lacks the action.
	inRoom := func(allowed ...string) map[string]string {
		m := map[string]string{rStranger: notIn, rWrite: notIn, rPresence: notIn, rRemoved: notIn, rRead: forbidden}
		for _, r := range allowed {
			m[r] = ok
		}
		return m
	}
	everyone := map[string]string{rStranger: ok, rRead: ok, rWrite: ok, rPresence: ok, rMember: ok, rRemoved: ok, rOwner: ok}
	msgs := []msgRow{
		{protocol.TypeRoomJoin, room, joined},
		{protocol.TypeRoomUpdatePresence, map[string]any{"room_id": "m", "presence": map[string]int{"a": 1}}, inRoom(rMember, rOwner)},
		{protocol.TypeRoomUpdateStorage, map[string]any{"room_id": "m", "ops": []map[string]any{{"op": "add", "path": "/ws", "value": 1}}}, inRoom(rMember, rOwner)},
		{protocol.TypeRoomUpdateStorage, map[string]any{"room_id": "m", "ops": []map[string]any{{"op": "test", "path": "/seed", "value": 1}}}, inRoom(rMember, rOwner)},
		{protocol.TypeRoomBroadcast, map[string]any{"room_id": "m", "event": "hi"}, inRoom(rMember, rOwner)},
		{protocol.TypeTypingStart, room, member},
		{protocol.TypeTypingStop, room, member},
		{protocol.TypePresenceUpdate, map[string]any{"presence": "online"}, everyone},
		{"media:join", room, member},
		{"media:leave", room, member},
		{protocol.TypeRoomLeave, room, map[string]string{rStranger: notIn, rWrite: notIn, rPresence: notIn, rRemoved: notIn, rRead: ok, rMember: ok, rOwner: ok}},
	}
	for _, role := range matrixRoles {
		if role == rAnon || role == rKey {
			continue
		}
		c := s.Dial(tokens[role])
		for i, m := range msgs {
			want := m.want[role]
			if want == "" {
				want = forbidden
			}
			verBefore := storageVersion(t, s, "m")
			if got := outcome(t, c, m.typ, "r"+string(rune('a'+i)), m.data); got != want {
				t.Errorf("%s as %s: %s, want %s", m.typ, role, got, want)
			}
			if want != ok && storageVersion(t, s, "m") != verBefore {
				t.Errorf("%s as %s: refused but storage changed", m.typ, role)
			}
		}
		_ = c.WS.Close()
		<-c.Closed()
	}
}

// TestAccessDevModeOpensRooms: with --dev every room is open to every user
// (read, presence, write, calls) over both the WebSocket and REST; chat
// stays for members and moderation for owners.
func TestAccessDevModeOpensRooms(t *testing.T) {
	env := mediaEnv()
	env["PARLEY_DEV"] = "true"
	s := servertest.Start(t, env)
	s.IgnoreTypes = []string{"presence:update"}
	anyone := s.Token("anyone", nil)
	c := s.Dial(anyone)
	join(c, "anyroom", "j", map[string]any{"presence": map[string]int{"x": 1}})
	patch(c, "anyroom", "s", `[{"op":"add","path":"/a","value":1}]`, nil)
	c.Expect(protocol.TypeRoomStorageUpdated)
	call(t, s, "GET", "/api/rooms/anyroom/storage", anyone, nil, http.StatusOK)
	call(t, s, "POST", "/api/rooms/anyroom/call/start", anyone, nil, http.StatusOK)
	if got := outcome(t, c, "media:join", "mj", map[string]string{"room_id": "anyroom"}); got != "ok" {
		t.Fatalf("dev media:join: %s", got)
	}
	owner := s.Token("owner", nil)
	createRoom(t, s, owner, "team", false)
	refuse(t, s, "POST", "/api/rooms/team/messages", anyone, map[string]string{"content": "hi"}, http.StatusForbidden, "forbidden")
	refuse(t, s, "POST", "/api/rooms/team/members", anyone, map[string]string{"user_id": "anyone"}, http.StatusForbidden, "forbidden")
	// The id has state: a user cannot claim it, even in dev mode.
	refuse(t, s, "POST", "/api/rooms", anyone, map[string]any{"id": "anyroom", "name": "mine"}, http.StatusConflict, "conflict")
}
