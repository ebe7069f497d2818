package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/server/servertest"
	"github.com/parleyhq/parley/internal/store"
	"github.com/parleyhq/parley/internal/webhook"
)

// Every server-API route: 401 without credentials or with a wrong key,
// 403 with a user token, its success with the key; 403 when the server
// has no key at all.
func TestServerAPIKeyRequired(t *testing.T) {
	s := servertest.Start(t, nil)
	a := s.DialUser("ua", servertest.AllRooms)
	a.Request(protocol.TypeRoomJoin, "j", map[string]any{"room_id": "r"})
	a.Expect(protocol.TypeRoomState)
	user := s.Token("ua", servertest.AllRooms)
	routes := []struct {
		method, path string
		body         any
		ok           int
	}{
		{"POST", "/api/rooms/r/broadcast", map[string]any{"event": 1}, http.StatusAccepted},
		{"GET", "/api/rooms/r/connections", nil, http.StatusOK},
		{"GET", "/api/live/rooms", nil, http.StatusOK},
		{"POST", "/api/users/nobody/disconnect", nil, http.StatusOK},
	}
	for _, rt := range routes {
		for _, c := range []struct {
			bearer string
			want   int
		}{{"", 401}, {"not-the-key-0123456789", 401}, {user, 403}, {servertest.APIKey, rt.ok}} {
			if code, body := s.Do(rt.method, rt.path, c.bearer, rt.body); code != c.want {
				t.Errorf("%s %s with %.10q: %d %s, want %d", rt.method, rt.path, c.bearer, code, body, c.want)
			}
		}
	}
	nokey := servertest.Start(t, map[string]string{"PARLEY_API_KEY": ""})
	for _, rt := range routes {
		if code, body := nokey.Do(rt.method, rt.path, "anything-0123456789", rt.body); code != 403 || !strings.Contains(string(body), "disabled") {
			t.Errorf("%s %s without a configured key: %d %s", rt.method, rt.path, code, body)
		}
	}
}

func joinRoom(t *testing.T, c *servertest.Client, room string, presence map[string]any) {
	t.Helper()
	d := map[string]any{"room_id": room}
	if presence != nil {
		d["presence"] = presence
	}
	c.Request(protocol.TypeRoomJoin, "j-"+room, d)
	if f := c.Expect(protocol.TypeRoomState); f.ID != "j-"+room {
		t.Fatalf("join %s: %+v", room, f)
	}
}

func TestServerAPIBroadcast(t *testing.T) {
	s := servertest.Start(t, map[string]string{"PARLEY_MAX_MESSAGE_BYTES": "1024"})
	s.IgnoreTypes = []string{"presence:update", protocol.TypeRoomJoined}
	a := s.DialUser("ua", servertest.AllRooms)
	b := s.DialUser("ub", servertest.AllRooms)
	joinRoom(t, a, "r", nil)
	joinRoom(t, b, "r", nil)
	code, body := s.Do("POST", "/api/rooms/r/broadcast", servertest.APIKey, `{"event": {"kind": "notice", "n": [1, 2]}}`)
	if code != 202 || string(body) != "{\"connections\":2}\n" {
		t.Fatalf("broadcast: %d %s", code, body)
	}
	for _, c := range []*servertest.Client{a, b} {
		f := c.Expect(protocol.TypeRoomEvent)
		if string(f.Data) != `{"room_id":"r","client_id":null,"user_id":null,"event":{"kind":"notice","n":[1,2]}}` {
			t.Fatalf("room:event %s", f.Data)
		}
	}
	for _, tc := range []struct {
		path, body string
		code       int
		errCode    string
	}{
		{"/api/rooms/nobody/broadcast", `{"event":1}`, 404, protocol.CodeNotFound},
		{"/api/rooms/bad%20id/broadcast", `{"event":1}`, 400, protocol.CodeBadRequest},
		{"/api/rooms/r/broadcast", `{}`, 400, protocol.CodeBadRequest},
		{"/api/rooms/r/broadcast", `{"event":1,"extra":2}`, 400, protocol.CodeBadRequest},
		{"/api/rooms/r/broadcast", `{"event":`, 400, protocol.CodeBadRequest},
		{"/api/rooms/r/broadcast", `{"event":"` + strings.Repeat("x", 1100) + `"}`, 413, protocol.CodeTooLarge},
		{"/api/rooms/r/broadcast", "{\"event\":\"\xff\"}", 400, protocol.CodeBadRequest},
	} {
		code, body := s.Do("POST", tc.path, servertest.APIKey, tc.body)
		var e struct{ Error string }
		_ = json.Unmarshal(body, &e)
		if code != tc.code || e.Error != tc.errCode {
			t.Errorf("%s %.40s: %d %s, want %d %s", tc.path, tc.body, code, body, tc.code, tc.errCode)
		}
	}
	a.ExpectNothing()
	// null is an event too.
	if code, body := s.Do("POST", "/api/rooms/r/broadcast", servertest.APIKey, `{"event":null}`); code != 202 {
		t.Fatalf("null event: %d %s", code, body)
	}
	if f := a.Expect(protocol.TypeRoomEvent); !strings.HasSuffix(string(f.Data), `"event":null}`) {
		t.Fatalf("null event frame %s", f.Data)
	}
}

type connsPage struct {
	Items []struct {
		ConnectionID string         `json:"connection_id"`
		UserID       string         `json:"user_id"`
		Name         string         `json:"name"`
		Presence     map[string]any `json:"presence"`
		JoinedAt     string         `json:"joined_at"`
	} `json:"items"`
	NextAfter *string `json:"next_after"`
}

func getJSON(t *testing.T, s *servertest.Server, path string, v any) {
	t.Helper()
	code, body := s.Do("GET", path, servertest.APIKey, nil)
	if code != 200 {
		t.Fatalf("GET %s: %d %s", path, code, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %s: %v", path, body, err)
	}
}

func TestServerAPIConnectionsAndLiveRooms(t *testing.T) {
	s := servertest.Start(t, nil)
	s.IgnoreTypes = []string{"presence:update", protocol.TypeRoomJoined}
	a := s.DialUser("ua", servertest.AllRooms)
	b := s.DialUser("ub", servertest.AllRooms)
	joinRoom(t, a, "r1", map[string]any{"cursor": 3})
	joinRoom(t, b, "r1", nil)
	joinRoom(t, b, "r2", nil)

	var p connsPage
	getJSON(t, s, "/api/rooms/r1/connections", &p)
	if len(p.Items) != 2 || p.NextAfter != nil {
		t.Fatalf("connections %+v", p)
	}
	byConn := map[string]int{}
	for i, it := range p.Items {
		byConn[it.ConnectionID] = i
		if _, err := time.Parse(time.RFC3339, it.JoinedAt); err != nil || it.Presence == nil {
			t.Fatalf("item %+v", it)
		}
	}
	ia := p.Items[byConn[a.ConnID]]
	if ia.UserID != "ua" || ia.Name != "Name ua" || fmt.Sprint(ia.Presence["cursor"]) != "3" || p.Items[byConn[b.ConnID]].UserID != "ub" {
		t.Fatalf("connections %+v", p)
	}
	getJSON(t, s, "/api/rooms/r1/connections?limit=1", &p)
	if len(p.Items) != 1 || p.NextAfter == nil {
		t.Fatalf("page 1 %+v", p)
	}
	first := p.Items[0].ConnectionID
	getJSON(t, s, "/api/rooms/r1/connections?limit=1&after="+*p.NextAfter, &p)
	if len(p.Items) != 1 || p.NextAfter != nil || p.Items[0].ConnectionID == first {
		t.Fatalf("page 2 %+v", p)
	}
	getJSON(t, s, "/api/rooms/empty/connections", &p)
	if p.Items == nil || len(p.Items) != 0 {
		t.Fatalf("empty room %+v", p)
	}
	for _, q := range []string{"limit=0", "limit=1001", "limit=x", "after=" + strings.Repeat("a", 300)} {
		if code, body := s.Do("GET", "/api/rooms/r1/connections?"+q, servertest.APIKey, nil); code != 400 {
			t.Errorf("?%.20s: %d %s", q, code, body)
		}
	}

	var live struct {
		Items []struct {
			RoomID      string `json:"room_id"`
			Connections int    `json:"connections"`
		} `json:"items"`
		NextAfter    *string  `json:"next_after"`
		MissingNodes []string `json:"missing_nodes"`
	}
	getJSON(t, s, "/api/live/rooms", &live)
	if fmt.Sprint(live.Items) != "[{r1 2} {r2 1}]" || live.NextAfter != nil || live.MissingNodes != nil {
		t.Fatalf("live rooms %+v", live)
	}
	getJSON(t, s, "/api/live/rooms?limit=1", &live)
	if fmt.Sprint(live.Items) != "[{r1 2}]" || live.NextAfter == nil || *live.NextAfter != "r1" {
		t.Fatalf("live page 1 %+v", live)
	}
	getJSON(t, s, "/api/live/rooms?limit=1&after=r1", &live)
	if fmt.Sprint(live.Items) != "[{r2 1}]" || live.NextAfter != nil {
		t.Fatalf("live page 2 %+v", live)
	}
	b.Request(protocol.TypeRoomLeave, "l", map[string]any{"room_id": "r2"})
	b.Expect(protocol.TypeRoomLeft)
	getJSON(t, s, "/api/live/rooms", &live)
	if fmt.Sprint(live.Items) != "[{r1 2}]" {
		t.Fatalf("after a leave %+v", live)
	}
}

// Every connection of the user closes with 4003 and the reason, cut to
// 123 bytes on a character boundary; others stay.
func TestServerAPIDisconnect(t *testing.T) {
	s := servertest.Start(t, nil)
	var conns []*servertest.Client
	for range 3 {
		conns = append(conns, s.DialUser("kick-me", nil))
	}
	other := s.DialUser("stay", nil)
	reason := strings.Repeat("é", 100) // 200 bytes
	code, body := s.Do("POST", "/api/users/kick-me/disconnect", servertest.APIKey, map[string]string{"reason": reason})
	if code != 200 || string(body) != "{\"closed\":3}\n" {
		t.Fatalf("disconnect: %d %s", code, body)
	}
	for i, c := range conns {
		select {
		case <-c.Closed():
		case <-time.After(5 * time.Second):
			t.Fatalf("connection %d not closed", i)
		}
		r := c.CloseReason()
		if c.CloseCode() != protocol.CloseDisconnected || !utf8.ValidString(r) || len(r) != 122 || !strings.HasPrefix(reason, r) {
			t.Fatalf("connection %d: close %d %q (%d bytes)", i, c.CloseCode(), r, len(r))
		}
	}
	other.ExpectNothing() // still connected
	// Nobody left: 0. No body: the default reason.
	if code, body := s.Do("POST", "/api/users/kick-me/disconnect", servertest.APIKey, nil); code != 200 || string(body) != "{\"closed\":0}\n" {
		t.Fatalf("again: %d %s", code, body)
	}
	if code, body := s.Do("POST", "/api/users/stay/disconnect", servertest.APIKey, nil); code != 200 || string(body) != "{\"closed\":1}\n" {
		t.Fatalf("stay: %d %s", code, body)
	}
	<-other.Closed()
	if other.CloseCode() != 4003 || other.CloseReason() != "disconnected by the server" {
		t.Fatalf("default reason: %d %q", other.CloseCode(), other.CloseReason())
	}
	for _, b := range []string{`{"reason":1}`, `{"why":"x"}`, `[`, "{\"reason\":\"\xff\"}", `{"reason":"a\u0000b"}`, `{"reason":"esc\u001b[2J"}`, `{"reason":"two\nlines"}`} {
		if code, body := s.Do("POST", "/api/users/kick-me/disconnect", servertest.APIKey, b); code != 400 {
			t.Errorf("body %q: %d %s", b, code, body)
		}
	}
}

// hookReceiver is a real HTTP receiver on 127.0.0.1 that verifies each
// webhook's signature and records the events; answer picks each status.
type hookReceiver struct {
	t      *testing.T
	srv    *httptest.Server
	mu     sync.Mutex
	events []webhook.Event
	answer func(n int, ev webhook.Event) int
}

const hookSecret = "whsec-servertest-0123456789"

func newHookReceiver(t *testing.T, answer func(n int, ev webhook.Event) int) *hookReceiver {
	h := &hookReceiver{t: t, answer: answer}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if _, err := webhook.Verify([]byte(hookSecret), r.Header.Get(webhook.SignatureHeader), body, time.Minute, time.Now()); err != nil {
			t.Errorf("webhook signature: %v (%s)", err, body)
			w.WriteHeader(400)
			return
		}
		var ev webhook.Event
		if err := json.Unmarshal(body, &ev); err != nil || ev.ID == "" || ev.CreatedAt == "" {
			t.Errorf("webhook body %s: %v", body, err)
		}
		h.mu.Lock()
		h.events = append(h.events, ev)
		n := len(h.events)
		h.mu.Unlock()
		code := 200
		if h.answer != nil {
			code = h.answer(n, ev)
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hookReceiver) got() []webhook.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]webhook.Event(nil), h.events...)
}

// waitEvent waits for an event of that name whose data contains want.
func (h *hookReceiver) waitEvent(name, want string) webhook.Event {
	h.t.Helper()
	var found webhook.Event
	servertest.WaitFor(h.t, 10*time.Second, name+" "+want, func() bool {
		for _, ev := range h.got() {
			if ev.Event == name && strings.Contains(string(ev.Data), want) {
				found = ev
				return true
			}
		}
		return false
	})
	return found
}

func webhookEnv(url string, extra map[string]string) map[string]string {
	env := map[string]string{"PARLEY_WEBHOOK_URL": url, "PARLEY_WEBHOOK_SECRET": hookSecret,
		"PARLEY_PRESENCE_OFFLINE_GRACE": "50ms"}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

// Every webhook event, each with a verified signature, from a real server.
func TestWebhooksEveryEvent(t *testing.T) {
	rec := newHookReceiver(t, nil)
	s := servertest.Start(t, webhookEnv(rec.srv.URL, mediaEnv()))
	ctx := context.Background()
	if err := s.Srv.Store.CreateRoom(ctx, store.Room{ID: "team", Name: "Team", OwnerID: "alice", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	alice := s.DialUser("alice", nil)
	rec.waitEvent(webhook.UserOnline, `"user_id":"alice"`)
	joinRoom(t, alice, "team", nil)
	rec.waitEvent(webhook.RoomStarted, `{"room_id":"team"}`)
	rec.waitEvent(webhook.RoomClientJoined, `"connection_id":"`+alice.ConnID+`","user_id":"alice","name":"Name alice"`)

	tok := s.Token("alice", nil)
	if code, body := s.Do("POST", "/api/rooms/team/messages", tok, map[string]string{"content": "hello hooks"}); code != 201 {
		t.Fatalf("post: %d %s", code, body)
	}
	rec.waitEvent(webhook.MessageCreated, `"content":"hello hooks"`)

	if code, body := s.Do("POST", "/api/rooms/team/call/start", tok, nil); code != 200 {
		t.Fatalf("call start: %d %s", code, body)
	}
	rec.waitEvent(webhook.CallStarted, `{"room_id":"team","started_by":"alice"}`)
	if code, body := s.Do("POST", "/api/rooms/team/call/join", tok, map[string]string{"connection_id": alice.ConnID}); code != 200 {
		t.Fatalf("call join: %d %s", code, body)
	}
	rec.waitEvent(webhook.CallParticipantJoined, `"connection_id":"`+alice.ConnID+`"`)
	if code, body := s.Do("POST", "/api/rooms/team/call/leave", tok, map[string]string{"connection_id": alice.ConnID}); code != 200 {
		t.Fatalf("call leave: %d %s", code, body)
	}
	rec.waitEvent(webhook.CallParticipantLeft, `"connection_id":"`+alice.ConnID+`"`)
	if code, body := s.Do("POST", "/api/rooms/team/call/end", tok, nil); code != 200 {
		t.Fatalf("call end: %d %s", code, body)
	}
	rec.waitEvent(webhook.CallEnded, `{"room_id":"team"}`)

	alice.Request(protocol.TypeRoomLeave, "l", map[string]any{"room_id": "team"})
	rec.waitEvent(webhook.RoomClientLeft, `"connection_id":"`+alice.ConnID+`"`)
	rec.waitEvent(webhook.RoomFinished, `{"room_id":"team"}`)
	_ = alice.WS.Close()
	rec.waitEvent(webhook.UserOffline, `{"user_id":"alice"}`)

	seen := map[string]int{}
	for _, ev := range rec.got() {
		seen[ev.Event]++
	}
	for _, name := range webhook.Events {
		if seen[name] != 1 {
			t.Errorf("%s received %d times", name, seen[name])
		}
	}
}

// A receiver that answers 500 and then 200 gets the same event (same id)
// twice; the metrics count one retry and one success.
func TestWebhookRedelivered(t *testing.T) {
	rec := newHookReceiver(t, func(n int, _ webhook.Event) int {
		if n == 1 {
			return 500
		}
		return 200
	})
	s := servertest.Start(t, webhookEnv(rec.srv.URL, nil))
	c := s.DialUser("u1", nil)
	_ = c
	servertest.WaitFor(t, 10*time.Second, "the redelivery", func() bool { return len(rec.got()) >= 2 })
	evs := rec.got()
	if evs[0].ID != evs[1].ID || evs[0].Event != webhook.UserOnline || string(evs[0].Data) != string(evs[1].Data) {
		t.Fatalf("events %+v", evs)
	}
	servertest.WaitFor(t, 5*time.Second, "metrics", func() bool {
		m := scrape(t, s)
		return m["parley_webhook_sent_total"] == 1 && m["parley_webhook_retried_total"] == 1 && m["parley_webhook_queue_length"] == 0
	})
}

var metricLine = regexp.MustCompile(`(?m)^(parley_webhook_\w+) (\S+)$`)

func scrape(t *testing.T, s *servertest.Server) map[string]float64 {
	t.Helper()
	code, body := s.Do("GET", "/metrics", "", nil)
	if code != 200 {
		t.Fatalf("metrics: %d", code)
	}
	out := map[string]float64{}
	for _, m := range metricLine.FindAllStringSubmatch(string(body), -1) {
		out[m[1]], _ = strconv.ParseFloat(m[2], 64)
	}
	return out
}

// A receiver that never answers: the real-time path goes on (a
// room:broadcast round trip completes before and after hundreds of
// events), the queue stays bounded, drops the oldest and counts them.
func TestWebhookDeadReceiver(t *testing.T) {
	release := make(chan struct{})
	var hits sync.WaitGroup
	dead := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		defer hits.Done()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(dead.Close)
	t.Cleanup(func() { close(release) }) // before dead.Close (cleanups run in reverse)
	// b sends 201 messages as fast as they are answered: more than the
	// default burst (200) when that takes under 10 ms, which CI saw
	// refused as rate_limited. This test is about webhooks.
	s := servertest.Start(t, webhookEnv(dead.URL, map[string]string{"PARLEY_WEBHOOK_QUEUE_SIZE": "5",
		"PARLEY_WEBHOOK_CONCURRENCY": "1", "PARLEY_WEBHOOK_TIMEOUT": "1m", "PARLEY_MSG_BURST": "1000"}))
	s.IgnoreTypes = []string{"presence:update", protocol.TypeRoomJoined}
	a := s.DialUser("ua", servertest.AllRooms)
	b := s.DialUser("ub", servertest.AllRooms)
	joinRoom(t, a, "rt", nil)
	joinRoom(t, b, "rt", nil)
	roundTrip := func(id string) time.Duration {
		start := time.Now()
		a.Request(protocol.TypeRoomBroadcast, id, map[string]any{"room_id": "rt", "event": id})
		if f := a.Expect(protocol.TypeAck); f.ID != id {
			t.Fatalf("ack %+v", f)
		}
		b.Expect(protocol.TypeRoomEvent)
		return time.Since(start)
	}
	before := roundTrip("before")
	// Each join and leave of another room is 4 events (started, joined,
	// left, finished).
	for i := range 100 {
		room := fmt.Sprint("churn-", i)
		joinRoom(t, b, room, nil)
		b.Request(protocol.TypeRoomLeave, "l"+room, map[string]any{"room_id": room})
		if f := b.Expect(protocol.TypeRoomLeft); f.ID != "l"+room {
			t.Fatalf("leave %+v", f)
		}
	}
	after := roundTrip("after")
	t.Logf("room:broadcast round trip: %v before, %v after 400 undeliverable webhook events", before, after)
	m := scrape(t, s)
	if m["parley_webhook_dropped_total"] < 390 || m["parley_webhook_queue_length"] > 6 || m["parley_webhook_sent_total"] != 0 {
		t.Fatalf("metrics %v", m)
	}
}
