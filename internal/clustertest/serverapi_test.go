package clustertest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/webhook"
)

// The server API across nodes (PROTOCOL.md v1.1 §7, docs/server-api.md):
// a call to any node acts on every node's clients.
func TestClusterServerAPI(t *testing.T) {
	t.Parallel()
	c := New(t, Options{})
	n1, n2, n3 := nodes3(c)
	a := n1.Dial(t, "A@n1", "ua", AllRooms)
	b := n2.Dial(t, "B@n2", "ub", AllRooms)
	cc := n3.Dial(t, "C@n3", "uc", AllRooms)
	a.Join("api-room", nil) // n1 owns it
	b.Join("api-room", map[string]any{"presence": map[string]any{"at": "n2"}})
	cc.Join("api-room", nil)
	lone := n3.Dial(t, "D@n3", "ud", AllRooms)
	lone.Join("api-lone", nil) // n3 owns it

	// Broadcast through the node with no client in the room.
	code, body := n2.Do(t, "POST", "/api/rooms/api-room/broadcast", APIKey, map[string]any{"event": map[string]any{"v": 1}})
	if code != 202 || strings.TrimSpace(string(body)) != `{"connections":3}` {
		t.Fatalf("broadcast via n2: %d %s", code, body)
	}
	for _, cl := range []*Client{a, b, cc} {
		f := cl.WaitFor(10*time.Second, "the backend's room:event", OfType("room:event"))
		if string(f.Data) != `{"room_id":"api-room","client_id":null,"user_id":null,"event":{"v":1}}` {
			t.Fatalf("%s: %s", cl.Label, f.Data)
		}
	}
	if code, body := n3.Do(t, "POST", "/api/rooms/nobody-here/broadcast", APIKey, `{"event":1}`); code != 404 {
		t.Fatalf("broadcast to no live room: %d %s", code, body)
	}

	// Connections: the owner knows every node's clients.
	for _, n := range []*Node{n1, n2, n3} {
		var p struct {
			Items []struct {
				ConnectionID string         `json:"connection_id"`
				UserID       string         `json:"user_id"`
				Presence     map[string]any `json:"presence"`
			} `json:"items"`
		}
		code, body := n.Do(t, "GET", "/api/rooms/api-room/connections", APIKey, nil)
		if code != 200 || json.Unmarshal(body, &p) != nil || len(p.Items) != 3 {
			t.Fatalf("connections via %s: %d %s", n.ID, code, body)
		}
		users := map[string]bool{}
		for _, it := range p.Items {
			users[it.UserID] = true
			if it.ConnectionID == b.ConnID && it.Presence["at"] != "n2" {
				t.Fatalf("B's presence via %s: %s", n.ID, body)
			}
		}
		if !users["ua"] || !users["ub"] || !users["uc"] {
			t.Fatalf("connections via %s: %s", n.ID, body)
		}
	}

	// Live rooms: every node's owned rooms, once.
	for _, n := range []*Node{n1, n2, n3} {
		code, body := n.Do(t, "GET", "/api/live/rooms", APIKey, nil)
		want := `{"items":[{"room_id":"api-lone","connections":1},{"room_id":"api-room","connections":3}],"next_after":null}`
		if code != 200 || strings.TrimSpace(string(body)) != want {
			t.Fatalf("live rooms via %s: %d %s", n.ID, code, body)
		}
	}
	if code, body := n1.Do(t, "GET", "/api/live/rooms?limit=1", APIKey, nil); code != 200 ||
		strings.TrimSpace(string(body)) != `{"items":[{"room_id":"api-lone","connections":1}],"next_after":"api-lone"}` {
		t.Fatalf("live rooms page: %d %s", code, body)
	}

	// Disconnect: every connection of the user on every node, 4003.
	var kicked []*Client
	for i, n := range []*Node{n1, n2, n3, n1} {
		kicked = append(kicked, n.Dial(t, fmt.Sprintf("K%d@%s", i, n.ID), "kick-me", nil))
	}
	code, body = n2.Do(t, "POST", "/api/users/kick-me/disconnect", APIKey, map[string]string{"reason": "account suspended"})
	if code != 200 || strings.TrimSpace(string(body)) != `{"closed":4}` {
		t.Fatalf("disconnect via n2: %d %s", code, body)
	}
	for _, k := range kicked {
		if code, err := k.WaitClosed(10 * time.Second); err != nil || code != 4003 || k.CloseReason() != "account suspended" {
			t.Fatalf("%s: close %d %q %v", k.Label, code, k.CloseReason(), err)
		}
	}
	if code, body = n3.Do(t, "POST", "/api/users/kick-me/disconnect", APIKey, nil); code != 200 || strings.TrimSpace(string(body)) != `{"closed":0}` {
		t.Fatalf("second disconnect: %d %s", code, body)
	}
	// The others are untouched.
	a.Call("ping", nil, 5*time.Second)
	lone.Call("ping", nil, 5*time.Second)
}

// hookLog is a webhook receiver on 127.0.0.1 (verifying every signature).
type hookLog struct {
	mu     sync.Mutex
	events []webhook.Event
	bad    []string
}

const clusterHookSecret = "whsec-clustertest-0123456789"

func newHookLog(t *testing.T) (*hookLog, string) {
	h := &hookLog{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var ev webhook.Event
		_, verr := webhook.Verify([]byte(clusterHookSecret), r.Header.Get(webhook.SignatureHeader), body, time.Minute, time.Now())
		jerr := json.Unmarshal(body, &ev)
		h.mu.Lock()
		if verr != nil || jerr != nil {
			h.bad = append(h.bad, fmt.Sprintf("%v %v %s", verr, jerr, body))
		} else {
			h.events = append(h.events, ev)
		}
		h.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	return h, srv.URL
}

// count returns how many distinct events (by id) of that name have data
// containing want, and how many deliveries they took.
func (h *hookLog) count(name, want string) (events, deliveries int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ids := map[string]bool{}
	for _, ev := range h.events {
		if ev.Event == name && strings.Contains(string(ev.Data), want) {
			ids[ev.ID] = true
			deliveries++
		}
	}
	return len(ids), deliveries
}

func (h *hookLog) wait(t *testing.T, name, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if n, _ := h.count(name, want); n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s with %s; got:\n%s", name, want, h.dump())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *hookLog) dump() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var lines []string
	for _, ev := range h.events {
		lines = append(lines, ev.Event+" "+string(ev.Data))
	}
	sort.Strings(lines)
	return strings.Join(append(lines, h.bad...), "\n")
}

// Every node sends webhooks, yet each event arrives once: room events
// from the room's owner, call events from the call's media node,
// message.created from the node that stored it, user.online/offline from
// the node whose status compare-and-set made the change.
func TestClusterWebhooksOnce(t *testing.T) {
	t.Parallel()
	hooks, url := newHookLog(t)
	c := New(t, Options{Env: map[string]string{"PARLEY_WEBHOOK_URL": url, "PARLEY_WEBHOOK_SECRET": clusterHookSecret,
		"PARLEY_PRESENCE_OFFLINE_GRACE": "300ms"}})
	n1, n2, n3 := nodes3(c)
	// One user on every node: one user.online.
	a1 := n1.Dial(t, "A@n1", "hook-a", AllRooms)
	a2 := n2.Dial(t, "A@n2", "hook-a", AllRooms)
	a3 := n3.Dial(t, "A@n3", "hook-a", AllRooms)
	for _, cl := range []*Client{a1, a2, a3} {
		cl.Join("hook-room", nil)
	}
	// A REST room for messages and calls, owned by hook-a.
	tok := c.Token("hook-a", nil)
	if code, body := n1.Do(t, "POST", "/api/rooms", tok, map[string]any{"id": "hook-chat", "name": "Hooks"}); code != 201 {
		t.Fatalf("create room: %d %s", code, body)
	}
	if code, body := n2.Do(t, "POST", "/api/rooms/hook-chat/messages", tok, map[string]string{"content": "once please"}); code != 201 {
		t.Fatalf("post: %d %s", code, body)
	}
	if code, body := n3.Do(t, "POST", "/api/rooms/hook-chat/call/start", tok, nil); code != 200 {
		t.Fatalf("call start: %d %s", code, body)
	}
	// A participant on n1 (REST call/join goes to the connection's node).
	if code, body := n1.Do(t, "POST", "/api/rooms/hook-chat/call/join", tok, map[string]string{"connection_id": a1.ConnID}); code != 200 {
		t.Fatalf("call join: %d %s", code, body)
	}
	if code, body := n1.Do(t, "POST", "/api/rooms/hook-chat/call/leave", tok, map[string]string{"connection_id": a1.ConnID}); code != 200 {
		t.Fatalf("call leave: %d %s", code, body)
	}
	if code, body := n2.Do(t, "POST", "/api/rooms/hook-chat/call/end", tok, nil); code != 200 {
		t.Fatalf("call end: %d %s", code, body)
	}
	for _, cl := range []*Client{a1, a2, a3} {
		cl.Close()
	}
	hooks.wait(t, webhook.UserOffline, `"hook-a"`)
	hooks.wait(t, webhook.RoomFinished, `"hook-room"`)
	time.Sleep(time.Second) // a duplicate from another node would be in by now

	for _, want := range []struct {
		name, data string
		n          int
	}{
		{webhook.UserOnline, `"hook-a"`, 1},
		{webhook.UserOffline, `"hook-a"`, 1},
		{webhook.RoomStarted, `"hook-room"`, 1},
		{webhook.RoomClientJoined, `"hook-room"`, 3},
		{webhook.RoomClientJoined, a2.ConnID, 1},
		{webhook.RoomClientLeft, `"hook-room"`, 3},
		{webhook.RoomFinished, `"hook-room"`, 1},
		{webhook.MessageCreated, `"once please"`, 1},
		{webhook.CallStarted, `"hook-chat"`, 1},
		{webhook.CallParticipantJoined, a1.ConnID, 1},
		{webhook.CallParticipantLeft, a1.ConnID, 1},
		{webhook.CallEnded, `"hook-chat"`, 1},
	} {
		if n, deliveries := hooks.count(want.name, want.data); n != want.n || deliveries != want.n {
			t.Errorf("%s %s: %d events in %d deliveries, want %d\nall:\n%s", want.name, want.data, n, deliveries, want.n, hooks.dump())
		}
	}
	hooks.mu.Lock()
	defer hooks.mu.Unlock()
	if len(hooks.bad) > 0 {
		t.Errorf("unverifiable deliveries: %v", hooks.bad)
	}
}
