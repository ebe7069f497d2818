package rooms

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/parleyhq/parley/internal/metrics"
	"github.com/parleyhq/parley/internal/protocol"
)

// recorder collects the webhook events one node emits.
type recorder struct {
	node string
	mu   *sync.Mutex
	log  *[]string
}

func (r recorder) Emit(event string, data any) {
	b, _ := json.Marshal(data)
	r.mu.Lock()
	*r.log = append(*r.log, r.node+" "+event+" "+string(b))
	r.mu.Unlock()
}

// newEventCluster is newTestCluster with an event recorder on each node.
func newEventCluster(t *testing.T, nodes ...string) (*testCluster, func() []string) {
	tc := &testCluster{net: newFakeNet(), store: newFakeStore(), acc: &fakeAccess{}, m: map[string]*Manager{}}
	com := newFakeCommitter(t, tc.store)
	var mu sync.Mutex
	var log []string
	for _, id := range nodes {
		fn := tc.net.node(t, id)
		opts := testOptions
		opts.Events = recorder{node: id, mu: &mu, log: &log}
		m := NewManager(opts, tc.store, com, tc.acc, metrics.New(nil), quietLog(), nil)
		m.syncTimeout = testSyncTimeout
		m.cl = fn
		fn.SetHandler(m)
		tc.m[id] = m
	}
	return tc, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), log...)
	}
}

// The server API from a node without clients in the room: the owner
// answers for every node's clients.
func TestAPIBroadcastAndConnectionsAcrossNodes(t *testing.T) {
	tc := newTestCluster(t, "n1", "n2", "n3")
	a, b := newSession("a", "ua"), newSession("b", "ub")
	var ca, cb int
	join(t, tc.m["n1"], a, "r", &ca) // n1 owns r
	join(t, tc.m["n2"], b, "r", &cb)
	send(t, tc.m["n2"], b, protocol.TypeRoomUpdatePresence, "p", map[string]any{"room_id": "r", "presence": map[string]any{"x": 1}})
	b.wait(t, &cb, "presence reply", isType(protocol.TypeRoomPresenceUpdated, "p"))
	ctx := context.Background()

	n, err := tc.m["n3"].BroadcastEvent(ctx, "r", json.RawMessage(`{"hi":true}`))
	if err != nil || n != 2 {
		t.Fatalf("broadcast through n3: %d %v", n, err)
	}
	for _, c := range []struct {
		s   *fakeSession
		cur *int
	}{{a, &ca}, {b, &cb}} {
		f := c.s.wait(t, c.cur, "api room:event", isType(protocol.TypeRoomEvent, ""))
		if string(f.Data) != `{"room_id":"r","client_id":null,"user_id":null,"event":{"hi":true}}` {
			t.Fatalf("room:event %s", f.Data)
		}
	}
	for _, node := range []string{"n1", "n2", "n3"} {
		p, err := tc.m[node].Connections(ctx, "r", "", 100)
		if err != nil || len(p.Items) != 2 || p.Items[0].ConnectionID != "a" || p.Items[1].ConnectionID != "b" ||
			p.Items[1].UserID != "ub" || string(p.Items[1].Presence["x"]) != "1" || p.NextAfter != nil || p.Items[0].JoinedAt == "" {
			t.Fatalf("connections through %s: %+v %v", node, p, err)
		}
	}
	p, err := tc.m["n3"].Connections(ctx, "r", "", 1)
	if err != nil || len(p.Items) != 1 || p.NextAfter == nil || *p.NextAfter != "a" {
		t.Fatalf("page 1: %+v %v", p, err)
	}
	p, err = tc.m["n3"].Connections(ctx, "r", *p.NextAfter, 1)
	if err != nil || len(p.Items) != 1 || p.Items[0].ConnectionID != "b" || p.NextAfter != nil {
		t.Fatalf("page 2: %+v %v", p, err)
	}

	live := map[string][]LiveRoom{}
	for id, m := range tc.m {
		live[id], _ = m.OwnedLiveRooms("", 10)
	}
	if fmt.Sprint(live["n1"]) != "[{r 2}]" || len(live["n2"]) != 0 || len(live["n3"]) != 0 {
		t.Fatalf("owned live rooms %v", live)
	}

	// A room nobody is in: not_found, an empty list, and no lease taken.
	if _, err := tc.m["n3"].BroadcastEvent(ctx, "idle", json.RawMessage(`1`)); protocol.AsError(err).Code != protocol.CodeNotFound {
		t.Fatalf("broadcast to an idle room: %v", err)
	}
	if p, err := tc.m["n3"].Connections(ctx, "idle", "", 10); err != nil || len(p.Items) != 0 {
		t.Fatalf("connections of an idle room: %+v %v", p, err)
	}
	if _, ok, _ := tc.net.nodes["n3"].Lease(ctx, "idle"); ok {
		t.Fatal("the server API took a lease on an idle room")
	}
}

func TestAPISingleNode(t *testing.T) {
	m, _, _ := newSingle(t)
	a := newSession("a", "ua")
	var ca int
	join(t, m, a, "r", &ca)
	ctx := context.Background()
	if n, err := m.BroadcastEvent(ctx, "r", json.RawMessage(`"x"`)); err != nil || n != 1 {
		t.Fatalf("broadcast: %d %v", n, err)
	}
	a.wait(t, &ca, "api event", isType(protocol.TypeRoomEvent, ""))
	if _, err := m.BroadcastEvent(ctx, "nobody", json.RawMessage(`"x"`)); protocol.AsError(err).Code != protocol.CodeNotFound {
		t.Fatalf("idle: %v", err)
	}
	if _, err := m.BroadcastEvent(ctx, "bad id!", json.RawMessage(`"x"`)); protocol.AsError(err).Code != protocol.CodeBadRequest {
		t.Fatalf("bad id: %v", err)
	}
	if rooms, more := m.OwnedLiveRooms("", 10); fmt.Sprint(rooms) != "[{r 1}]" || more {
		t.Fatalf("live rooms %v %v", rooms, more)
	}
	if rooms, _ := m.OwnedLiveRooms("r", 10); len(rooms) != 0 {
		t.Fatalf("after the cursor: %v", rooms)
	}
}

// Room webhook events come from the room's owner only, once per join and
// leave; an owner change carries clients over without new joins.
func TestRoomEventsFromTheOwnerOnce(t *testing.T) {
	tc, events := newEventCluster(t, "n1", "n2", "n3")
	a, b, c := newSession("a", "ua"), newSession("b", "ub"), newSession("c", "uc")
	var ca, cb, cc int
	join(t, tc.m["n1"], a, "r", &ca) // n1 owns r
	join(t, tc.m["n2"], b, "r", &cb)
	join(t, tc.m["n3"], c, "r", &cc)
	send(t, tc.m["n3"], c, protocol.TypeRoomLeave, "l", map[string]any{"room_id": "r"})
	c.wait(t, &cc, "left", isType(protocol.TypeRoomLeft, "l"))
	want := []string{
		`n1 room.started {"room_id":"r"}`,
		`n1 room.client_joined {"room_id":"r","connection_id":"a","user_id":"ua"}`,
		`n1 room.client_joined {"room_id":"r","connection_id":"b","user_id":"ub"}`,
		`n1 room.client_joined {"room_id":"r","connection_id":"c","user_id":"uc"}`,
		`n1 room.client_left {"room_id":"r","connection_id":"c","user_id":"uc"}`,
	}
	eventually(t, "5 events", func() bool { return len(events()) == 5 })
	if got := events(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("events:\n%s", strings.Join(got, "\n"))
	}

	// n1 (the owner, with a) dies; n2 takes the room over with b: no new
	// join and no second start (a's leave is not reported: its owner died
	// with it, docs/server-api.md).
	tc.net.kill("n1")
	b.wait(t, &cb, "fresh state", unsolicited(protocol.TypeRoomState))
	d := newSession("d", "ud")
	var cd int
	join(t, tc.m["n3"], d, "r", &cd)
	tc.m["n2"].Disconnected(b, true)
	tc.m["n3"].Disconnected(d, true)
	eventually(t, "the room finished", func() bool {
		got := events()
		return len(got) > 0 && strings.Contains(got[len(got)-1], "room.finished")
	})
	got := events()[5:]
	sort.Strings(got[:len(got)-1])
	if s := strings.Join(got, "\n"); s != strings.Join([]string{
		`n2 room.client_joined {"room_id":"r","connection_id":"d","user_id":"ud"}`,
		`n2 room.client_left {"room_id":"r","connection_id":"b","user_id":"ub"}`,
		`n2 room.client_left {"room_id":"r","connection_id":"d","user_id":"ud"}`,
		`n2 room.finished {"room_id":"r"}`,
	}, "\n") {
		t.Fatalf("events after the owner change:\n%s", s)
	}
}
