package server_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/server/servertest"
)

// --- helpers -------------------------------------------------------------

// call does a REST request and requires the status.
func call(t *testing.T, s *servertest.Server, method, path, bearer string, body any, want int, headers ...string) []byte {
	t.Helper()
	code, out := s.Do(method, path, bearer, body, headers...)
	if code != want {
		t.Fatalf("%s %s: HTTP %d %s, want %d", method, path, code, out, want)
	}
	return out
}

func decodeAs[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}

// refuse does a request that must fail with status and error code.
func refuse(t *testing.T, s *servertest.Server, method, path, bearer string, body any, status int, code string, headers ...string) {
	t.Helper()
	out := call(t, s, method, path, bearer, body, status, headers...)
	e := decodeAs[struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}](t, out)
	if e.Error != code || e.Message == "" {
		t.Fatalf("%s %s: error %s (%q), want %s", method, path, e.Error, e.Message, code)
	}
}

type tokenPair struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	ExpiresIn    int64  `json:"expires_in"`
	User         struct {
		ID          string `json:"id"`
		Username    string `json:"username"`
		DisplayName string `json:"display_name"`
	} `json:"user"`
}

type roomJSON struct {
	ID        string   `json:"id"`
	Name      string   `json:"name"`
	Open      bool     `json:"open"`
	OwnerID   string   `json:"owner_id"`
	CreatedAt string   `json:"created_at"`
	Members   []string `json:"members"`
}

type message struct {
	ID        string  `json:"id"`
	RoomID    string  `json:"room_id"`
	AuthorID  string  `json:"author_id"`
	Content   string  `json:"content"`
	Nonce     string  `json:"nonce"`
	CreatedAt string  `json:"created_at"`
	UpdatedAt *string `json:"updated_at"`
}

type messagePage struct {
	Items      []message `json:"items"`
	NextBefore *string   `json:"next_before"`
}

type userEvent struct {
	RoomID   string `json:"room_id"`
	UserID   string `json:"user_id"`
	Presence string `json:"presence"`
}

// party tracks the connected clients of a test so that dialing a user's
// first connection consumes the presence:update {user, online} every other
// connected user gets (audience "all"), leaving the clients in step.
type party struct {
	t      *testing.T
	s      *servertest.Server
	conns  []*servertest.Client
	shared map[string][]string // audience "shared": user → users who see them; nil = all
}

func newParty(t *testing.T, s *servertest.Server) *party { return &party{t: t, s: s} }

func (p *party) dial(user string) *servertest.Client {
	p.t.Helper()
	first := true
	for _, c := range p.conns {
		if c.UserID == user {
			first = false
		}
	}
	c := p.s.Dial(p.s.Token(user, nil))
	// The pong proves the connection's lifecycle hooks ran (they run
	// before its read loop): its presence broadcast is out.
	c.ExpectNothing()
	if first {
		for _, o := range p.conns {
			if o.UserID != user && p.sees(o.UserID, user) {
				expectUserEvent(o, protocol.TypePresenceUpdate, userEvent{UserID: user, Presence: "online"})
			}
		}
	}
	p.conns = append(p.conns, c)
	return c
}

func (p *party) sees(watcher, user string) bool {
	if p.shared == nil {
		return true
	}
	for _, u := range p.shared[user] {
		if u == watcher {
			return true
		}
	}
	return false
}

// hangUp closes c and drops it from the party.
func (p *party) hangUp(c *servertest.Client) {
	p.t.Helper()
	_ = c.WS.Close()
	for i, o := range p.conns {
		if o == c {
			p.conns = append(p.conns[:i], p.conns[i+1:]...)
			break
		}
	}
}

func expectUserEvent(c *servertest.Client, typ string, want userEvent) {
	c.T.Helper()
	var got userEvent
	c.ExpectInto(typ, &got)
	if got != want {
		c.T.Fatalf("%s: %s %+v, want %+v", c.UserID, typ, got, want)
	}
}

func quiet(cs ...*servertest.Client) {
	for _, c := range cs {
		c.T.Helper()
		c.ExpectNothing()
	}
}

func expectAck(c *servertest.Client, id string) {
	c.T.Helper()
	if f := c.Expect(protocol.TypeAck); f.ID != id {
		c.T.Fatalf("%s: ack id %q, want %q", c.UserID, f.ID, id)
	}
}

// createRoom creates a room owned by the token's user.
func createRoom(t *testing.T, s *servertest.Server, token, id string, open bool) roomJSON {
	t.Helper()
	return decodeAs[roomJSON](t, call(t, s, "POST", "/api/rooms", token,
		map[string]any{"id": id, "name": "Room " + id, "open": open}, http.StatusCreated))
}

func addMember(t *testing.T, s *servertest.Server, token, room, user string) {
	t.Helper()
	call(t, s, "POST", "/api/rooms/"+room+"/members", token, map[string]any{"user_id": user}, http.StatusNoContent)
}

func post(t *testing.T, s *servertest.Server, token, room string, body any, headers ...string) message {
	t.Helper()
	return decodeAs[message](t, call(t, s, "POST", "/api/rooms/"+room+"/messages", token, body, http.StatusCreated, headers...))
}

func listMessages(t *testing.T, s *servertest.Server, token, room, query string) messagePage {
	t.Helper()
	return decodeAs[messagePage](t, call(t, s, "GET", "/api/rooms/"+room+"/messages"+query, token, nil, http.StatusOK))
}

// --- accounts ------------------------------------------------------------

func TestChatAuthRegisterLoginRefreshLogout(t *testing.T) {
	s := servertest.Start(t, nil)

	out := call(t, s, "POST", "/api/auth/register", "",
		map[string]any{"username": "Alice_1", "password": "correct horse", "display_name": "Alice A."}, http.StatusCreated)
	reg := decodeAs[tokenPair](t, out)
	if reg.AccessToken == "" || reg.RefreshToken == "" || reg.ExpiresIn < 890 || reg.ExpiresIn > 900 ||
		reg.User.ID == "" || reg.User.Username != "Alice_1" || reg.User.DisplayName != "Alice A." {
		t.Fatalf("register answer %s", out)
	}
	me := decodeAs[map[string]string](t, call(t, s, "GET", "/api/me", reg.AccessToken, nil, http.StatusOK))
	if me["id"] != reg.User.ID || me["username"] != "Alice_1" || me["display_name"] != "Alice A." {
		t.Fatalf("GET /api/me = %v", me)
	}
	// The access token is the WebSocket's.
	if c := s.Dial(reg.AccessToken); c.UserID != reg.User.ID {
		t.Fatalf("connected as %q, want %q", c.UserID, reg.User.ID)
	}

	// Refusals change nothing.
	refuse(t, s, "POST", "/api/auth/register", "", map[string]any{"username": "alice_1", "password": "another pw"}, 409, "conflict")
	for _, bad := range []map[string]any{
		{"username": "al", "password": "long enough"},
		{"username": strings.Repeat("a", 33), "password": "long enough"},
		{"username": "al ice", "password": "long enough"},
		{"username": "bob", "password": "short"},
		{"username": "bob", "password": strings.Repeat("p", 129)},
		{"username": "bob", "password": 12345678},
		{"username": "bob", "password": "long enough", "admin": true},
		{"username": "bob", "password": "long enough", "display_name": "  "},
	} {
		refuse(t, s, "POST", "/api/auth/register", "", bad, 400, "bad_request")
	}
	refuse(t, s, "POST", "/api/auth/login", "", map[string]any{"username": "bob", "password": "long enough"}, 401, "unauthorized")
	refuse(t, s, "GET", "/api/me", "", nil, 401, "unauthorized")
	refuse(t, s, "GET", "/api/me", "not-a-token", nil, 401, "unauthorized")

	// Login: wrong password and unknown user answer the same.
	_, wrong := s.Do("POST", "/api/auth/login", "", map[string]any{"username": "alice_1", "password": "wrong password"})
	_, unknown := s.Do("POST", "/api/auth/login", "", map[string]any{"username": "nobody", "password": "wrong password"})
	if string(wrong) != string(unknown) {
		t.Errorf("wrong password answers %s, unknown user %s", wrong, unknown)
	}
	refuse(t, s, "POST", "/api/auth/login", "", map[string]any{"username": "alice_1", "password": "wrong password"}, 401, "unauthorized")
	login := decodeAs[tokenPair](t, call(t, s, "POST", "/api/auth/login", "",
		map[string]any{"username": "ALICE_1", "password": "correct horse"}, http.StatusOK))
	if login.User.ID != reg.User.ID || login.RefreshToken == reg.RefreshToken {
		t.Fatalf("login answer %+v", login)
	}

	// Refresh rotates: the old token is used up.
	ref := decodeAs[tokenPair](t, call(t, s, "POST", "/api/auth/refresh", "", map[string]any{"refresh_token": login.RefreshToken}, http.StatusOK))
	if ref.RefreshToken == login.RefreshToken || ref.User.ID != reg.User.ID || ref.AccessToken == "" {
		t.Fatalf("refresh answer %+v", ref)
	}
	refuse(t, s, "POST", "/api/auth/refresh", "", map[string]any{"refresh_token": "made-up"}, 401, "unauthorized")
	refuse(t, s, "POST", "/api/auth/refresh", "", map[string]any{}, 400, "bad_request")
	call(t, s, "GET", "/api/me", ref.AccessToken, nil, http.StatusOK)

	// Logout revokes; the other sessions' tokens still work.
	call(t, s, "POST", "/api/auth/logout", "", map[string]any{"refresh_token": ref.RefreshToken}, http.StatusNoContent)
	refuse(t, s, "POST", "/api/auth/refresh", "", map[string]any{"refresh_token": ref.RefreshToken}, 401, "unauthorized")
	call(t, s, "POST", "/api/auth/logout", "", map[string]any{"refresh_token": ref.RefreshToken}, http.StatusNoContent)
	again := decodeAs[tokenPair](t, call(t, s, "POST", "/api/auth/refresh", "", map[string]any{"refresh_token": reg.RefreshToken}, http.StatusOK))

	// Reuse of a used refresh token (stolen?) is refused and revokes every
	// refresh token of the user: the current one stops working too.
	refuse(t, s, "POST", "/api/auth/refresh", "", map[string]any{"refresh_token": login.RefreshToken}, 401, "unauthorized")
	refuse(t, s, "POST", "/api/auth/refresh", "", map[string]any{"refresh_token": again.RefreshToken}, 401, "unauthorized")
	// Logging in again works.
	call(t, s, "POST", "/api/auth/login", "", map[string]any{"username": "alice_1", "password": "correct horse"}, http.StatusOK)
}

func TestChatLoginRateLimit(t *testing.T) {
	s := servertest.Start(t, map[string]string{"PARLEY_LOGIN_RATE": "0.001", "PARLEY_LOGIN_BURST": "3",
		"PARLEY_LOGIN_IP_RATE": "0.001", "PARLEY_LOGIN_IP_BURST": "3"})
	call(t, s, "POST", "/api/auth/register", "", map[string]any{"username": "carol", "password": "carol's password"}, http.StatusCreated)
	for range 3 {
		refuse(t, s, "POST", "/api/auth/login", "", map[string]any{"username": "carol", "password": "nope nope"}, 401, "unauthorized")
	}
	// Even the right password is refused now, and so is another username
	// from the same address.
	refuse(t, s, "POST", "/api/auth/login", "", map[string]any{"username": "carol", "password": "carol's password"}, 429, "rate_limited")
	refuse(t, s, "POST", "/api/auth/login", "", map[string]any{"username": "dave", "password": "whatever1"}, 429, "rate_limited")
	// Registration is not a login attempt.
	call(t, s, "POST", "/api/auth/register", "", map[string]any{"username": "erin", "password": "erin's password"}, http.StatusCreated)
}

func TestChatBackendMintedTokens(t *testing.T) {
	s := servertest.Start(t, nil)
	out := call(t, s, "POST", "/api/tokens", servertest.APIKey,
		map[string]any{"user_id": "ext-42", "name": "Grace", "ttl_seconds": 600, "rooms": map[string][]string{"team-*": {"read"}}}, http.StatusOK)
	tok := decodeAs[map[string]string](t, out)["token"]
	if tok == "" {
		t.Fatalf("POST /api/tokens = %s", out)
	}
	me := decodeAs[map[string]string](t, call(t, s, "GET", "/api/me", tok, nil, http.StatusOK))
	if me["id"] != "ext-42" || me["username"] != "" || me["display_name"] != "Grace" {
		t.Fatalf("GET /api/me for a minted token = %v", me)
	}
	if c := s.Dial(tok); c.UserID != "ext-42" {
		t.Fatalf("WS user %q", c.UserID)
	}
	// A minted user can own rooms and post without registering.
	createRoom(t, s, tok, "ext-room", false)
	post(t, s, tok, "ext-room", map[string]any{"content": "hi"})

	refuse(t, s, "POST", "/api/tokens", "", map[string]any{"user_id": "x"}, 401, "unauthorized")
	refuse(t, s, "POST", "/api/tokens", tok, map[string]any{"user_id": "x"}, 403, "forbidden")
	for _, bad := range []map[string]any{
		{},
		{"user_id": ""},
		{"user_id": "x", "ttl_seconds": 0},
		{"user_id": "x", "ttl_seconds": "60"},
		{"user_id": "x", "rooms": map[string][]string{"r": {"admin"}}},
		{"user_id": "x", "rooms": map[string][]string{"bad room": {"read"}}},
		{"user_id": "x", "extra": 1},
	} {
		refuse(t, s, "POST", "/api/tokens", servertest.APIKey, bad, 400, "bad_request")
	}
}

// --- rooms and membership -----------------------------------------------

func TestChatRoomsAndMembership(t *testing.T) {
	s := servertest.Start(t, nil)
	alice, bob, carol := s.Token("alice", nil), s.Token("bob", nil), s.Token("carol", nil)

	r := createRoom(t, s, alice, "general", false)
	if r.ID != "general" || r.Name != "Room general" || r.Open || r.OwnerID != "alice" || r.CreatedAt == "" {
		t.Fatalf("created %+v", r)
	}
	gen := decodeAs[roomJSON](t, call(t, s, "POST", "/api/rooms", alice, map[string]any{"name": "No id"}, http.StatusCreated))
	if len(gen.ID) != 36 || gen.OwnerID != "alice" {
		t.Fatalf("generated room %+v", gen)
	}
	refuse(t, s, "POST", "/api/rooms", bob, map[string]any{"id": "general", "name": "Again"}, 409, "conflict")
	for _, bad := range []map[string]any{
		{"id": "bad id", "name": "x"},
		{"id": strings.Repeat("r", 129), "name": "x"},
		{"id": "ok", "name": ""},
		{"id": "ok", "name": strings.Repeat("n", 101)},
		{"id": "ok", "name": "x", "open": "yes"},
		{"id": 7, "name": "x"},
	} {
		refuse(t, s, "POST", "/api/rooms", alice, bad, 400, "bad_request")
	}
	refuse(t, s, "POST", "/api/rooms", "", map[string]any{"name": "x"}, 401, "unauthorized")
	refuse(t, s, "GET", "/api/rooms/ok", alice, nil, 403, "forbidden") // unknown looks like private

	mine := decodeAs[messagePage](t, call(t, s, "GET", "/api/rooms", bob, nil, http.StatusOK))
	if len(mine.Items) != 0 || mine.NextBefore != nil {
		t.Fatalf("bob's rooms before joining: %+v", mine)
	}
	refuse(t, s, "GET", "/api/rooms/general", bob, nil, 403, "forbidden")
	refuse(t, s, "POST", "/api/rooms/general/members", bob, map[string]any{"user_id": "bob"}, 403, "forbidden")
	refuse(t, s, "POST", "/api/rooms/general/join", bob, nil, 403, "forbidden")
	refuse(t, s, "POST", "/api/rooms/nope/join", bob, nil, 403, "forbidden")
	refuse(t, s, "POST", "/api/rooms/general/members", alice, map[string]any{"user_id": ""}, 400, "bad_request")

	addMember(t, s, alice, "general", "bob")
	addMember(t, s, alice, "general", "bob") // idempotent
	got := decodeAs[roomJSON](t, call(t, s, "GET", "/api/rooms/general", bob, nil, http.StatusOK))
	if strings.Join(got.Members, ",") != "alice,bob" {
		t.Fatalf("members %v", got.Members)
	}
	rooms := decodeAs[struct {
		Items      []roomJSON `json:"items"`
		NextBefore *string    `json:"next_before"`
	}](t, call(t, s, "GET", "/api/rooms", bob, nil, http.StatusOK))
	if len(rooms.Items) != 1 || rooms.Items[0].ID != "general" || rooms.NextBefore != nil {
		t.Fatalf("bob's rooms %+v", rooms)
	}

	// Open rooms: anyone may read and join.
	createRoom(t, s, alice, "lobby", true)
	call(t, s, "GET", "/api/rooms/lobby", carol, nil, http.StatusOK)
	call(t, s, "POST", "/api/rooms/lobby/join", carol, nil, http.StatusNoContent)
	call(t, s, "POST", "/api/rooms/lobby/leave", carol, nil, http.StatusNoContent)

	// The owner can neither be removed nor leave; others can.
	refuse(t, s, "DELETE", "/api/rooms/general/members/alice", alice, nil, 403, "forbidden")
	refuse(t, s, "POST", "/api/rooms/general/leave", alice, nil, 403, "forbidden")
	refuse(t, s, "DELETE", "/api/rooms/general/members/alice", bob, nil, 403, "forbidden")
	call(t, s, "POST", "/api/rooms/general/leave", bob, nil, http.StatusNoContent)
	refuse(t, s, "GET", "/api/rooms/general", bob, nil, 403, "forbidden")

	// The API key administers any room.
	call(t, s, "POST", "/api/rooms/general/members", servertest.APIKey, map[string]any{"user_id": "carol"}, http.StatusNoContent)
	call(t, s, "GET", "/api/rooms/general", carol, nil, http.StatusOK)
	call(t, s, "DELETE", "/api/rooms/general/members/carol", servertest.APIKey, nil, http.StatusNoContent)
	refuse(t, s, "GET", "/api/rooms/general", carol, nil, 403, "forbidden")
}

// TestChatMemberRemovalLiveEffect: a removed member stops getting the
// room's messages and typing at once, is refused on typing:start, and
// leaves the live room.
func TestChatMemberRemovalLiveEffect(t *testing.T) {
	s := servertest.Start(t, map[string]string{"PARLEY_TYPING_TIMEOUT": "1m"})
	alice, bob := s.Token("alice", nil), s.Token("bob", nil)
	createRoom(t, s, alice, "team", false)
	addMember(t, s, alice, "team", "bob")
	p := newParty(t, s)
	a := p.dial("alice")
	b := p.dial("bob")

	// Membership lets bob into the live room too.
	join(a, "team", "ja", nil)
	join(b, "team", "jb", nil)
	a.Expect(protocol.TypeRoomJoined)

	b.Request(protocol.TypeTypingStart, "t1", map[string]any{"room_id": "team"})
	expectAck(b, "t1")
	expectUserEvent(a, protocol.TypeTypingStart, userEvent{RoomID: "team", UserID: "bob"})
	m := post(t, s, alice, "team", map[string]any{"content": "before"})
	b.Expect(protocol.TypeMessageCreate)
	a.Expect(protocol.TypeMessageCreate)

	call(t, s, "DELETE", "/api/rooms/team/members/bob", alice, nil, http.StatusNoContent)
	// bob leaves the live room; his typing ends for the others.
	var left struct {
		ClientID string `json:"client_id"`
		UserID   string `json:"user_id"`
	}
	b.ExpectInto(protocol.TypeRoomLeft, &left)
	a.ExpectInto(protocol.TypeRoomLeft, &left)
	if left.ClientID != b.ConnID || left.UserID != "bob" {
		t.Fatalf("room:left %+v", left)
	}
	expectUserEvent(a, protocol.TypeTypingStop, userEvent{RoomID: "team", UserID: "bob"})

	post(t, s, alice, "team", map[string]any{"content": "after"})
	a.Expect(protocol.TypeMessageCreate)
	call(t, s, "PATCH", "/api/rooms/team/messages/"+m.ID, alice, map[string]any{"content": "edited"}, http.StatusOK)
	a.Expect(protocol.TypeMessageUpdate)
	a.Request(protocol.TypeTypingStart, "t2", map[string]any{"room_id": "team"})
	expectAck(a, "t2")
	b.Request(protocol.TypeTypingStart, "t3", map[string]any{"room_id": "team"})
	b.ExpectError(protocol.CodeForbidden, "t3")
	refuse(t, s, "POST", "/api/rooms/team/messages", bob, map[string]any{"content": "let me in"}, 403, "forbidden")
	refuse(t, s, "GET", "/api/rooms/team/messages", bob, nil, 403, "forbidden")
	quiet(a, b)

	// Added back: pushes reach him again.
	addMember(t, s, alice, "team", "bob")
	post(t, s, alice, "team", map[string]any{"content": "welcome back"})
	a.Expect(protocol.TypeMessageCreate)
	b.Expect(protocol.TypeMessageCreate)
	// Posting ended alice's typing (started while bob was out).
	expectUserEvent(b, protocol.TypeTypingStop, userEvent{RoomID: "team", UserID: "alice"})
	quiet(a, b)
}

// --- messages ------------------------------------------------------------

func TestChatMessagesPaginate(t *testing.T) {
	s := servertest.Start(t, nil)
	alice := s.Token("alice", nil)
	createRoom(t, s, alice, "log", false)
	var ids []string
	for i := range 25 {
		m := post(t, s, alice, "log", map[string]any{"content": fmt.Sprintf("m%02d", i)})
		ids = append(ids, m.ID)
	}
	var seen []string
	before := ""
	for _, want := range []int{10, 10, 5} {
		q := "?limit=10"
		if before != "" {
			q += "&before=" + before
		}
		page := listMessages(t, s, alice, "log", q)
		if len(page.Items) != want {
			t.Fatalf("page after %q has %d items, want %d", before, len(page.Items), want)
		}
		for _, m := range page.Items {
			seen = append(seen, m.ID)
		}
		if want == 5 {
			if page.NextBefore != nil {
				t.Fatalf("last page next_before = %q, want null", *page.NextBefore)
			}
			break
		}
		if page.NextBefore == nil || *page.NextBefore != page.Items[len(page.Items)-1].ID {
			t.Fatalf("next_before %v, want the last item's id", page.NextBefore)
		}
		before = *page.NextBefore
	}
	// Newest first, each message exactly once.
	for i, id := range seen {
		if id != ids[len(ids)-1-i] {
			t.Fatalf("item %d is %s, want %s (no duplicate, no gap, newest first)", i, id, ids[len(ids)-1-i])
		}
	}
	// Default page size, and the bounds.
	if page := listMessages(t, s, alice, "log", ""); len(page.Items) != 25 || page.NextBefore != nil {
		t.Fatalf("default page: %d items, next %v", len(page.Items), page.NextBefore)
	}
	if page := listMessages(t, s, alice, "log", "?limit=25"); len(page.Items) != 25 || page.NextBefore != nil {
		t.Fatalf("exact page: %d items, next %v", len(page.Items), page.NextBefore)
	}
	for _, q := range []string{"?limit=0", "?limit=101", "?limit=x", "?before=not-an-id"} {
		refuse(t, s, "GET", "/api/rooms/log/messages"+q, alice, nil, 400, "bad_request")
	}
}

// TestChatMessageAudience: every connection of every member gets the push
// except the one named by X-Connection-Id; non-members get nothing.
func TestChatMessageAudience(t *testing.T) {
	s := servertest.Start(t, nil)
	alice, bob := s.Token("alice", nil), s.Token("bob", nil)
	createRoom(t, s, alice, "team", false)
	addMember(t, s, alice, "team", "bob")
	p := newParty(t, s)
	a1 := p.dial("alice")
	a2 := p.dial("alice")
	b := p.dial("bob")
	c := p.dial("carol") // not a member

	m := post(t, s, alice, "team", map[string]any{"content": "héllo 👋", "nonce": "n-1"}, "X-Connection-Id", a1.ConnID)
	if m.ID == "" || m.RoomID != "team" || m.AuthorID != "alice" || m.Content != "héllo 👋" || m.Nonce != "n-1" ||
		m.CreatedAt == "" || m.UpdatedAt != nil {
		t.Fatalf("created %+v", m)
	}
	for _, cl := range []*servertest.Client{a2, b} {
		var got message
		cl.ExpectInto(protocol.TypeMessageCreate, &got)
		if got != m {
			t.Fatalf("%s got message:create %+v, want %+v", cl.UserID, got, m)
		}
	}
	quiet(a1, a2, b, c)

	// Without the header every connection of the author gets it; a header
	// naming someone else's connection is ignored.
	post(t, s, alice, "team", map[string]any{"content": "two"}, "X-Connection-Id", b.ConnID)
	for _, cl := range []*servertest.Client{a1, a2, b} {
		cl.Expect(protocol.TypeMessageCreate)
	}
	quiet(a1, a2, b, c)

	// Edit: author only.
	refuse(t, s, "PATCH", "/api/rooms/team/messages/"+m.ID, bob, map[string]any{"content": "hijack"}, 403, "forbidden")
	refuse(t, s, "PATCH", "/api/rooms/team/messages/"+m.ID, alice, map[string]any{"content": ""}, 400, "bad_request")
	quiet(a1, a2, b, c)
	ed := decodeAs[message](t, call(t, s, "PATCH", "/api/rooms/team/messages/"+m.ID, alice,
		map[string]any{"content": "edited"}, http.StatusOK, "X-Connection-Id", a2.ConnID))
	if ed.ID != m.ID || ed.Content != "edited" || ed.UpdatedAt == nil || ed.CreatedAt != m.CreatedAt || ed.Nonce != "n-1" {
		t.Fatalf("edited %+v", ed)
	}
	for _, cl := range []*servertest.Client{a1, b} {
		var got message
		cl.ExpectInto(protocol.TypeMessageUpdate, &got)
		if got.ID != ed.ID || got.Content != "edited" || got.UpdatedAt == nil || *got.UpdatedAt != *ed.UpdatedAt {
			t.Fatalf("%s got message:update %+v", cl.UserID, got)
		}
	}
	quiet(a1, a2, b, c)

	// Delete: author only, soft, then gone from reads.
	refuse(t, s, "DELETE", "/api/rooms/team/messages/"+m.ID, bob, nil, 403, "forbidden")
	call(t, s, "DELETE", "/api/rooms/team/messages/"+m.ID, alice, nil, http.StatusNoContent, "X-Connection-Id", a1.ConnID)
	for _, cl := range []*servertest.Client{a2, b} {
		var got map[string]string
		cl.ExpectInto(protocol.TypeMessageDelete, &got)
		if len(got) != 2 || got["id"] != m.ID || got["room_id"] != "team" {
			t.Fatalf("%s got message:delete %v", cl.UserID, got)
		}
	}
	quiet(a1, a2, b, c)
	refuse(t, s, "DELETE", "/api/rooms/team/messages/"+m.ID, alice, nil, 404, "not_found")
	refuse(t, s, "PATCH", "/api/rooms/team/messages/"+m.ID, alice, map[string]any{"content": "zombie"}, 404, "not_found")
	page := listMessages(t, s, bob, "team", "")
	if len(page.Items) != 1 || page.Items[0].Content != "two" {
		t.Fatalf("after delete: %+v", page.Items)
	}
	quiet(a1, a2, b, c)
}

// TestChatMessageRefusals: every refused write stores nothing and notifies
// nobody.
func TestChatMessageRefusals(t *testing.T) {
	s := servertest.Start(t, map[string]string{"PARLEY_MESSAGE_MAX_CHARS": "10"})
	alice, carol := s.Token("alice", nil), s.Token("carol", nil)
	createRoom(t, s, alice, "team", false)
	createRoom(t, s, alice, "open", true)
	p := newParty(t, s)
	a := p.dial("alice")
	c := p.dial("carol")
	first := post(t, s, alice, "team", map[string]any{"content": strings.Repeat("é", 10)}) // exactly the limit
	a.Expect(protocol.TypeMessageCreate)

	path := "/api/rooms/team/messages"
	refuse(t, s, "POST", path, carol, map[string]any{"content": "intruder"}, 403, "forbidden")
	refuse(t, s, "POST", "/api/rooms/open/messages", carol, map[string]any{"content": "join first"}, 403, "forbidden")
	refuse(t, s, "POST", "/api/rooms/nowhere/messages", alice, map[string]any{"content": "x"}, 403, "forbidden")
	refuse(t, s, "POST", "/api/rooms/bad%20id/messages", alice, map[string]any{"content": "x"}, 400, "bad_request")
	refuse(t, s, "POST", path, "", map[string]any{"content": "x"}, 401, "unauthorized")
	refuse(t, s, "POST", path, servertest.APIKey, map[string]any{"content": "x"}, 403, "forbidden")
	refuse(t, s, "POST", path, alice, map[string]any{"content": strings.Repeat("é", 11)}, 413, "too_large")
	for _, bad := range []any{
		map[string]any{"content": ""},
		map[string]any{},
		map[string]any{"content": 5},
		map[string]any{"content": "x", "nonce": 1},
		map[string]any{"content": "x", "nonce": strings.Repeat("n", 65)},
		map[string]any{"content": "x", "pinned": true},
		`{"content": "x"`,
		`["content"]`,
	} {
		refuse(t, s, "POST", path, alice, bad, 400, "bad_request")
	}
	refuse(t, s, "PATCH", path+"/"+first.ID, alice, map[string]any{"content": strings.Repeat("x", 11)}, 413, "too_large")
	refuse(t, s, "PATCH", path+"/"+first.ID, carol, map[string]any{"content": "x"}, 403, "forbidden")
	refuse(t, s, "PATCH", path+"/0190c6f0-0000-7000-8000-000000000000", alice, map[string]any{"content": "x"}, 404, "not_found")
	refuse(t, s, "DELETE", path+"/"+first.ID, carol, nil, 403, "forbidden")
	refuse(t, s, "GET", path, carol, nil, 403, "forbidden")
	quiet(a, c)
	page := listMessages(t, s, alice, "team", "")
	if len(page.Items) != 1 || page.Items[0] != first {
		t.Fatalf("after refusals the room holds %+v", page.Items)
	}
}

// --- typing --------------------------------------------------------------

func TestChatTypingAudienceRenewalExpiry(t *testing.T) {
	// Long enough that a renewal every ~100 ms never lets it lapse, even
	// on a loaded machine under -race.
	const timeout = time.Second
	s := servertest.Start(t, map[string]string{"PARLEY_TYPING_TIMEOUT": timeout.String()})
	alice := s.Token("alice", nil)
	createRoom(t, s, alice, "team", false)
	addMember(t, s, alice, "team", "bob")
	p := newParty(t, s)
	a1 := p.dial("alice")
	a2 := p.dial("alice")
	b := p.dial("bob")
	c := p.dial("carol")
	start := map[string]any{"room_id": "team"}
	want := userEvent{RoomID: "team", UserID: "alice"}

	a1.Request(protocol.TypeTypingStart, "s1", start)
	expectAck(a1, "s1")
	expectUserEvent(b, protocol.TypeTypingStart, want)
	quiet(a1, a2, b, c) // not to the typer's own connections, not to non-members

	// Renewals (from any of the user's connections, with or without id)
	// only renew: no second typing:start, and no stop while renewed.
	began := time.Now()
	last := began
	for time.Since(began) < 3*timeout/2 {
		if f, ok := b.Next(timeout / 10); ok {
			t.Fatalf("bob got %s %s while alice kept typing", f.Type, f.Data)
		}
		a2.Request(protocol.TypeTypingStart, "r", start)
		expectAck(a2, "r")
		last = time.Now()
	}
	quiet(a1, a2)
	// Expiry: one typing:stop once the timeout passes without renewal.
	expectUserEvent(b, protocol.TypeTypingStop, want)
	if waited := time.Since(last); waited < timeout-100*time.Millisecond {
		t.Fatalf("typing:stop %v after the last renewal, timeout is %v", waited, timeout)
	}
	quiet(a1, a2, b, c)

	// Explicit stop; a stop while not typing is acked and sent to nobody.
	a1.Request(protocol.TypeTypingStart, "s2", start)
	expectAck(a1, "s2")
	expectUserEvent(b, protocol.TypeTypingStart, want)
	a2.Request(protocol.TypeTypingStop, "x1", start)
	expectAck(a2, "x1")
	expectUserEvent(b, protocol.TypeTypingStop, want)
	a1.Request(protocol.TypeTypingStop, "x2", start)
	expectAck(a1, "x2")
	quiet(a1, a2, b, c)

	// Two typers in one room: each tells the other.
	a1.Request(protocol.TypeTypingStart, "", start)
	expectUserEvent(b, protocol.TypeTypingStart, want)
	b.Request(protocol.TypeTypingStart, "", start)
	expectUserEvent(a1, protocol.TypeTypingStart, userEvent{RoomID: "team", UserID: "bob"})
	expectUserEvent(a2, protocol.TypeTypingStart, userEvent{RoomID: "team", UserID: "bob"})
	quiet(c)
}

func TestChatTypingStopsOnMessageAndDisconnect(t *testing.T) {
	s := servertest.Start(t, map[string]string{"PARLEY_TYPING_TIMEOUT": "1m"})
	alice, bob := s.Token("alice", nil), s.Token("bob", nil)
	createRoom(t, s, alice, "team", false)
	createRoom(t, s, alice, "side", false)
	addMember(t, s, alice, "team", "bob")
	addMember(t, s, alice, "side", "bob")
	p := newParty(t, s)
	a := p.dial("alice")
	b1 := p.dial("bob")
	b2 := p.dial("bob")
	bobTyping := func(room string) {
		t.Helper()
		b1.Request(protocol.TypeTypingStart, "", map[string]any{"room_id": room})
		expectUserEvent(a, protocol.TypeTypingStart, userEvent{RoomID: room, UserID: "bob"})
	}

	// Posting ends the author's typing in that room only, after the message.
	bobTyping("team")
	bobTyping("side")
	m := post(t, s, bob, "team", map[string]any{"content": "done typing"}, "X-Connection-Id", b1.ConnID)
	var got message
	a.ExpectInto(protocol.TypeMessageCreate, &got)
	if got.ID != m.ID {
		t.Fatalf("message:create %+v", got)
	}
	expectUserEvent(a, protocol.TypeTypingStop, userEvent{RoomID: "team", UserID: "bob"})
	b2.Expect(protocol.TypeMessageCreate)
	quiet(a, b1, b2)
	bobTyping("team") // a new start after the post is broadcast again

	// Closing one of two connections ends nothing; closing the last ends
	// every room's typing at once (the timeout is a minute).
	p.hangUp(b1)
	<-b1.Closed()
	quiet(a, b2)
	p.hangUp(b2)
	stops := map[string]bool{}
	for range 2 {
		var ev userEvent
		a.ExpectInto(protocol.TypeTypingStop, &ev)
		if ev.UserID != "bob" {
			t.Fatalf("typing:stop %+v", ev)
		}
		stops[ev.RoomID] = true
	}
	if !stops["team"] || !stops["side"] {
		t.Fatalf("typing:stop for rooms %v, want team and side", stops)
	}
	quiet(a)
}

func TestChatTypingRefusals(t *testing.T) {
	s := servertest.Start(t, nil)
	alice := s.Token("alice", nil)
	createRoom(t, s, alice, "team", false)
	createRoom(t, s, alice, "open", true)
	p := newParty(t, s)
	a := p.dial("alice")
	c := p.dial("carol")

	c.Request(protocol.TypeTypingStart, "f1", map[string]any{"room_id": "team"})
	c.ExpectError(protocol.CodeForbidden, "f1")
	c.Request(protocol.TypeTypingStart, "f2", map[string]any{"room_id": "open"}) // open but not joined
	c.ExpectError(protocol.CodeForbidden, "f2")
	c.Request(protocol.TypeTypingStop, "f3", map[string]any{"room_id": "team"})
	c.ExpectError(protocol.CodeForbidden, "f3")
	c.Request(protocol.TypeTypingStart, "n1", map[string]any{"room_id": "nowhere"})
	c.ExpectError(protocol.CodeForbidden, "n1") // unknown looks like private
	for i, data := range []any{
		map[string]any{},
		map[string]any{"room_id": 5},
		map[string]any{"room_id": "bad id"},
		map[string]any{"room_id": "team", "extra": true},
	} {
		id := fmt.Sprintf("b%d", i)
		a.Request(protocol.TypeTypingStart, id, data)
		a.ExpectError(protocol.CodeBadRequest, id)
	}
	a.Request("typing:dance", "u1", map[string]any{"room_id": "team"})
	a.ExpectError(protocol.CodeBadRequest, "u1")
	quiet(a, c)
}

// --- user presence -------------------------------------------------------

func presenceOf(t *testing.T, s *servertest.Server, token string, ids ...string) map[string]string {
	t.Helper()
	out := decodeAs[struct {
		Items []userEvent `json:"items"`
	}](t, call(t, s, "GET", "/api/presence?user_ids="+strings.Join(ids, ","), token, nil, http.StatusOK))
	m := map[string]string{}
	for _, it := range out.Items {
		m[it.UserID] = it.Presence
	}
	if len(m) != len(ids) {
		t.Fatalf("GET /api/presence answered %+v for %v", out.Items, ids)
	}
	return m
}

func TestChatPresenceConnectGraceNoFlicker(t *testing.T) {
	const grace = 600 * time.Millisecond // a reconnect must fit in it, even under load
	s := servertest.Start(t, map[string]string{"PARLEY_PRESENCE_OFFLINE_GRACE": grace.String()})
	viewer := s.Token("bob", nil)
	p := newParty(t, s)
	b := p.dial("bob")
	if got := presenceOf(t, s, viewer, "alice", "bob"); got["alice"] != "offline" || got["bob"] != "online" {
		t.Fatalf("presence before alice connects: %v", got)
	}
	a1 := p.dial("alice") // bob gets {alice, online}
	quiet(a1)             // no status about herself
	a2 := p.dial("alice") // not a first connection: nobody hears of it
	quiet(b, a1, a2)
	if got := presenceOf(t, s, viewer, "alice"); got["alice"] != "online" {
		t.Fatalf("alice shows %v", got)
	}

	// Last connection gone: offline only after the grace period.
	p.hangUp(a1)
	p.hangUp(a2)
	closed := time.Now()
	expectUserEvent(b, protocol.TypePresenceUpdate, userEvent{UserID: "alice", Presence: "offline"})
	if waited := time.Since(closed); waited < grace-50*time.Millisecond {
		t.Fatalf("offline after %v, grace is %v", waited, grace)
	}
	if got := presenceOf(t, s, viewer, "alice"); got["alice"] != "offline" {
		t.Fatalf("alice shows %v after the grace", got)
	}
	a3 := p.dial("alice") // online again
	quiet(b, a3)

	// A reconnect within the grace period: no offline, no online.
	p.hangUp(a3)
	<-a3.Closed()
	a4 := s.Dial(s.Token("alice", nil))
	if f, ok := b.Next(grace + 200*time.Millisecond); ok {
		t.Fatalf("bob got %s %s on a quick reconnect", f.Type, f.Data)
	}
	quiet(b, a4)
	if got := presenceOf(t, s, viewer, "alice"); got["alice"] != "online" {
		t.Fatalf("alice shows %v after a quick reconnect", got)
	}
}

// TestChatPresenceInvisible: an invisible user is offline to everyone else
// in every frame and every REST answer; their own connections see
// invisible.
func TestChatPresenceInvisible(t *testing.T) {
	const grace = 200 * time.Millisecond
	s := servertest.Start(t, map[string]string{"PARLEY_PRESENCE_OFFLINE_GRACE": grace.String()})
	alice, bob := s.Token("alice", nil), s.Token("bob", nil)
	p := newParty(t, s)
	b := p.dial("bob")
	a1 := p.dial("alice")
	a2 := p.dial("alice")
	// Every frame bob gets is checked for the word.
	bobGets := func(want userEvent) {
		t.Helper()
		f := b.Expect(protocol.TypePresenceUpdate)
		if strings.Contains(string(f.Data), "invisible") {
			t.Fatalf("bob saw %s", f.Data)
		}
		var got userEvent
		_ = json.Unmarshal(f.Data, &got)
		if got != want {
			t.Fatalf("bob got %+v, want %+v", got, want)
		}
	}
	bobSeesNothing := func(within time.Duration) {
		t.Helper()
		if f, ok := b.Next(within); ok {
			t.Fatalf("bob got %s %s", f.Type, f.Data)
		}
		b.ExpectNothing()
	}
	set := func(c *servertest.Client, id, status string) {
		t.Helper()
		c.Request(protocol.TypePresenceUpdate, id, map[string]any{"presence": status})
		expectAck(c, id)
	}

	set(a1, "p1", "invisible")
	expectUserEvent(a2, protocol.TypePresenceUpdate, userEvent{UserID: "alice", Presence: "invisible"})
	bobGets(userEvent{UserID: "alice", Presence: "offline"})
	quiet(a1, a2, b)
	if got := presenceOf(t, s, bob, "alice"); got["alice"] != "offline" {
		t.Fatalf("bob's REST view %v", got)
	}
	if got := presenceOf(t, s, alice, "alice", "bob"); got["alice"] != "invisible" || got["bob"] != "online" {
		t.Fatalf("alice's REST view %v", got)
	}
	if got := presenceOf(t, s, servertest.APIKey, "alice"); got["alice"] != "offline" {
		t.Fatalf("API key's REST view %v", got)
	}

	// invisible → offline → invisible changes nothing others can see.
	set(a2, "p2", "offline")
	expectUserEvent(a1, protocol.TypePresenceUpdate, userEvent{UserID: "alice", Presence: "offline"})
	set(a2, "p3", "invisible")
	expectUserEvent(a1, protocol.TypePresenceUpdate, userEvent{UserID: "alice", Presence: "invisible"})
	bobSeesNothing(0)

	// Visible again, then invisible again.
	set(a1, "p4", "dnd")
	expectUserEvent(a2, protocol.TypePresenceUpdate, userEvent{UserID: "alice", Presence: "dnd"})
	bobGets(userEvent{UserID: "alice", Presence: "dnd"})
	set(a1, "p5", "invisible")
	expectUserEvent(a2, protocol.TypePresenceUpdate, userEvent{UserID: "alice", Presence: "invisible"})
	bobGets(userEvent{UserID: "alice", Presence: "offline"})

	// Disconnecting, the grace passing and reconnecting while invisible
	// (the status is stored) show bob nothing at all.
	p.hangUp(a1)
	p.hangUp(a2)
	bobSeesNothing(grace + 200*time.Millisecond)
	a3 := s.Dial(alice)
	a3.ExpectNothing() // its lifecycle hooks have run
	bobSeesNothing(0)
	if got := presenceOf(t, s, bob, "alice"); got["alice"] != "offline" {
		t.Fatalf("bob's REST view after reconnect %v", got)
	}
	if got := presenceOf(t, s, alice, "alice"); got["alice"] != "invisible" {
		t.Fatalf("alice's own REST view after reconnect %v", got)
	}
	set(a3, "p6", "idle")
	bobGets(userEvent{UserID: "alice", Presence: "idle"})
	quiet(a3, b)
}

func TestChatPresenceRefusals(t *testing.T) {
	s := servertest.Start(t, nil)
	bob := s.Token("bob", nil)
	p := newParty(t, s)
	b := p.dial("bob")
	a := p.dial("alice")
	for i, data := range []any{
		map[string]any{"presence": "away"},
		map[string]any{"presence": ""},
		map[string]any{"presence": "ONLINE"},
		map[string]any{"presence": 1},
		map[string]any{},
		map[string]any{"presence": "idle", "until": 5},
	} {
		id := fmt.Sprintf("bad%d", i)
		a.Request(protocol.TypePresenceUpdate, id, data)
		a.ExpectError(protocol.CodeBadRequest, id)
	}
	a.Request("presence:query", "q", nil)
	a.ExpectError(protocol.CodeBadRequest, "q")
	quiet(a, b)
	if got := presenceOf(t, s, bob, "alice"); got["alice"] != "online" {
		t.Fatalf("alice shows %v after refused updates", got)
	}

	refuse(t, s, "GET", "/api/presence?user_ids=alice", "", nil, 401, "unauthorized")
	refuse(t, s, "GET", "/api/presence", bob, nil, 400, "bad_request")
	refuse(t, s, "GET", "/api/presence?user_ids=a,,b", bob, nil, 400, "bad_request")
	many := make([]string, 101)
	for i := range many {
		many[i] = fmt.Sprint("u", i)
	}
	refuse(t, s, "GET", "/api/presence?user_ids="+strings.Join(many, ","), bob, nil, 400, "bad_request")
	if got := presenceOf(t, s, bob, many[:100]...); len(got) != 100 || got["u0"] != "offline" {
		t.Fatalf("100 ids: %d answers", len(got))
	}
}

// TestChatPresenceAudienceShared: with presence-audience shared only users
// who share a room hear of a status change.
func TestChatPresenceAudienceShared(t *testing.T) {
	s := servertest.Start(t, map[string]string{"PARLEY_PRESENCE_AUDIENCE": "shared", "PARLEY_PRESENCE_OFFLINE_GRACE": "50ms"})
	alice := s.Token("alice", nil)
	createRoom(t, s, alice, "team", false)
	addMember(t, s, alice, "team", "bob")
	p := newParty(t, s)
	p.shared = map[string][]string{"alice": {"bob"}, "bob": {"alice"}}
	b := p.dial("bob")
	c := p.dial("carol")
	a := p.dial("alice") // bob hears, carol does not
	a.Request(protocol.TypePresenceUpdate, "", map[string]any{"presence": "idle"})
	expectUserEvent(b, protocol.TypePresenceUpdate, userEvent{UserID: "alice", Presence: "idle"})
	p.hangUp(a)
	expectUserEvent(b, protocol.TypePresenceUpdate, userEvent{UserID: "alice", Presence: "offline"})
	quiet(b, c)
}
