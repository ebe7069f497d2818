package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/access"
	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/metrics"
	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/store"
)

// Unit tests of the rooms logic over the in-memory fakes (fakes_test.go):
// one node, and clusters of fake nodes with real ordering, leases, fencing
// and node failure.

type stateMsg struct {
	RoomID      string `json:"room_id"`
	ClientID    string `json:"client_id"`
	MemberCount int    `json:"member_count"`
	Members     []struct {
		ClientID string                     `json:"client_id"`
		UserID   string                     `json:"user_id"`
		Presence map[string]json.RawMessage `json:"presence"`
	} `json:"members"`
	Storage struct {
		Version int64           `json:"version"`
		Data    json.RawMessage `json:"data"`
		Updates []struct {
			Version int64 `json:"version"`
		} `json:"updates"`
	} `json:"storage"`
}

func decodeState(t *testing.T, f frame) stateMsg {
	t.Helper()
	var st stateMsg
	if err := json.Unmarshal(f.Data, &st); err != nil {
		t.Fatalf("room:state %s: %v", f.Data, err)
	}
	return st
}

func memberIDs(st stateMsg) map[string]bool {
	out := map[string]bool{}
	for _, m := range st.Members {
		out[m.ClientID] = true
	}
	return out
}

type versionMsg struct {
	Version  int64  `json:"version"`
	ClientID string `json:"client_id"`
}

func join(t *testing.T, m *Manager, s *fakeSession, room string, cursor *int) stateMsg {
	t.Helper()
	id := "j-" + s.id + "-" + room
	send(t, m, s, protocol.TypeRoomJoin, id, map[string]any{"room_id": room})
	f := s.wait(t, cursor, "room:state for "+id, func(f frame) bool { return f.ID == id })
	if f.Type != protocol.TypeRoomState {
		t.Fatalf("join %s: got %s %s %+v", room, f.Type, f.Data, f.Err)
	}
	return decodeState(t, f)
}

func addOp(key string, v int) []map[string]any {
	return []map[string]any{{"op": "add", "path": "/" + key, "value": v}}
}

func TestSingleNodeRoom(t *testing.T) {
	m, st, _ := newSingle(t)
	a, b := newSession("a", "ua"), newSession("b", "ub")
	var ca, cb int
	join(t, m, a, "r", &ca)
	stB := join(t, m, b, "r", &cb)
	if stB.MemberCount != 2 || !memberIDs(stB)["a"] {
		t.Fatalf("b's state: %+v", stB)
	}
	a.wait(t, &ca, "room:joined b", isType(protocol.TypeRoomJoined, ""))

	send(t, m, b, protocol.TypeRoomUpdatePresence, "p1", map[string]any{"room_id": "r", "presence": map[string]any{"x": 1}})
	b.wait(t, &cb, "presence reply", isType(protocol.TypeRoomPresenceUpdated, "p1"))
	a.wait(t, &ca, "presence event", isType(protocol.TypeRoomPresenceUpdated, ""))

	send(t, m, a, protocol.TypeRoomBroadcast, "", map[string]any{"room_id": "r", "event": map[string]any{"hi": true}})
	b.wait(t, &cb, "room:event", isType(protocol.TypeRoomEvent, ""))

	for i := 1; i <= 3; i++ {
		send(t, m, a, protocol.TypeRoomUpdateStorage, fmt.Sprint("s", i), map[string]any{"room_id": "r", "ops": addOp(fmt.Sprint("k", i), i)})
	}
	for i := 1; i <= 3; i++ {
		f := a.wait(t, &ca, "storage ack", isType(protocol.TypeRoomStorageUpdated, fmt.Sprint("s", i)))
		var v versionMsg
		_ = json.Unmarshal(f.Data, &v)
		if v.Version != int64(i) {
			t.Fatalf("ack %d has version %d", i, v.Version)
		}
		b.wait(t, &cb, "storage event", isType(protocol.TypeRoomStorageUpdated, ""))
	}
	if n := st.versions("r"); n != 3 {
		t.Fatalf("store has %d versions, want 3", n)
	}

	send(t, m, a, protocol.TypeRoomLeave, "l", map[string]any{"room_id": "r"})
	a.wait(t, &ca, "own room:left", isType(protocol.TypeRoomLeft, "l"))
	b.wait(t, &cb, "room:left a", isType(protocol.TypeRoomLeft, ""))
	m.Disconnected(b, true)
	if m.LiveRooms() != 0 || m.TrackedConnections() != 0 {
		t.Fatalf("after everyone left: %d rooms, %d connections", m.LiveRooms(), m.TrackedConnections())
	}
}

// A failed commit drops the head back to the committed document: the
// sender hears internal, and the next batch gets the next durable version
// (no gap, nothing of the failed batch left).
func TestCommitFailureRollsBack(t *testing.T) {
	m, st, _ := newSingle(t)
	a := newSession("a", "ua")
	var ca int
	join(t, m, a, "r", &ca)
	send(t, m, a, protocol.TypeRoomUpdateStorage, "s1", map[string]any{"room_id": "r", "ops": addOp("one", 1)})
	a.wait(t, &ca, "ack v1", isType(protocol.TypeRoomStorageUpdated, "s1"))

	st.mu.Lock()
	st.fail = errors.New("disk on fire")
	st.mu.Unlock()
	send(t, m, a, protocol.TypeRoomUpdateStorage, "s2", map[string]any{"room_id": "r", "ops": addOp("two", 2)})
	f := a.wait(t, &ca, "error for s2", func(f frame) bool { return f.ID == "s2" })
	if f.Type != "error" || f.Err.Code != protocol.CodeInternal {
		t.Fatalf("s2: %+v", f)
	}
	st.mu.Lock()
	st.fail = nil
	st.mu.Unlock()
	send(t, m, a, protocol.TypeRoomUpdateStorage, "s3", map[string]any{"room_id": "r", "ops": addOp("three", 3)})
	f = a.wait(t, &ca, "ack s3", func(f frame) bool { return f.ID == "s3" })
	var v versionMsg
	_ = json.Unmarshal(f.Data, &v)
	if f.Type != protocol.TypeRoomStorageUpdated || v.Version != 2 {
		t.Fatalf("s3: %s %s", f.Type, f.Data)
	}
	_, data, err := m.Snapshot(context.Background(), "r")
	if err != nil || string(data) != `{"one":1,"three":3}` {
		t.Fatalf("snapshot %s %v", data, err)
	}
}

func TestClusterMembershipPresenceBroadcast(t *testing.T) {
	tc := newTestCluster(t, "n1", "n2", "n3")
	a, b, c := newSession("a", "ua"), newSession("b", "ub"), newSession("c", "uc")
	var ca, cb, cc int
	join(t, tc.m["n1"], a, "r", &ca)
	stB := join(t, tc.m["n2"], b, "r", &cb)
	stC := join(t, tc.m["n3"], c, "r", &cc)
	if !memberIDs(stB)["a"] || stC.MemberCount != 3 {
		t.Fatalf("states: b %+v c %+v", stB, stC)
	}
	a.wait(t, &ca, "room:joined b", isType(protocol.TypeRoomJoined, ""))
	a.wait(t, &ca, "room:joined c", isType(protocol.TypeRoomJoined, ""))
	b.wait(t, &cb, "room:joined c", isType(protocol.TypeRoomJoined, ""))

	send(t, tc.m["n2"], b, protocol.TypeRoomUpdatePresence, "p", map[string]any{"room_id": "r", "presence": map[string]any{"cursor": 7}})
	b.wait(t, &cb, "presence reply", isType(protocol.TypeRoomPresenceUpdated, "p"))
	a.wait(t, &ca, "presence on n1", isType(protocol.TypeRoomPresenceUpdated, ""))
	c.wait(t, &cc, "presence on n3", isType(protocol.TypeRoomPresenceUpdated, ""))

	send(t, tc.m["n3"], c, protocol.TypeRoomBroadcast, "e", map[string]any{"room_id": "r", "event": "hello"})
	c.wait(t, &cc, "broadcast ack", isType(protocol.TypeAck, "e"))
	a.wait(t, &ca, "event on n1", isType(protocol.TypeRoomEvent, ""))
	b.wait(t, &cb, "event on n2", isType(protocol.TypeRoomEvent, ""))
	for _, f := range c.all() {
		if f.Type == protocol.TypeRoomEvent {
			t.Fatalf("the sender got its own room:event")
		}
	}

	send(t, tc.m["n2"], b, protocol.TypeRoomLeave, "l", map[string]any{"room_id": "r"})
	b.wait(t, &cb, "own room:left", isType(protocol.TypeRoomLeft, "l"))
	a.wait(t, &ca, "room:left b on n1", isType(protocol.TypeRoomLeft, ""))
	c.wait(t, &cc, "room:left b on n3", isType(protocol.TypeRoomLeft, ""))
	if subs := tc.net.subscribers("r"); fmt.Sprint(subs) != "[n1 n3]" {
		t.Fatalf("subscribers after n2's only client left: %v", subs)
	}
	tc.m["n3"].Disconnected(c, true)
	a.wait(t, &ca, "room:left c on disconnect", isType(protocol.TypeRoomLeft, ""))
}

// Three writers on three nodes: one order, no gap, every batch
// acknowledged, every client sees every version once.
func TestClusterStorageOneOrder(t *testing.T) {
	tc := newTestCluster(t, "n1", "n2", "n3")
	nodes := []string{"n1", "n2", "n3"}
	sess := map[string]*fakeSession{}
	cur := map[string]*int{}
	for _, n := range nodes {
		s := newSession("c"+n, "u"+n)
		sess[n], cur[n] = s, new(int)
		join(t, tc.m[n], s, "r", cur[n])
	}
	const per = 50
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, n := range nodes {
			for _, f := range sess[n].all() {
				if f.Type == "error" {
					t.Logf("%s: error %s %+v", n, f.ID, f.Err)
				}
			}
		}
	})
	for i := 0; i < per; i++ {
		for _, n := range nodes {
			send(t, tc.m[n], sess[n], protocol.TypeRoomUpdateStorage, fmt.Sprintf("%s-%d", n, i),
				map[string]any{"room_id": "r", "ops": addOp(fmt.Sprintf("%s_%d", n, i), i)})
		}
	}
	for _, n := range nodes {
		s := sess[n]
		acks := 0
		for v := int64(1); v <= 3*per; v++ {
			f := s.wait(t, cur[n], fmt.Sprint("version ", v), func(f frame) bool {
				return f.Type == protocol.TypeRoomStorageUpdated || f.Type == "error"
			})
			if f.Type == "error" {
				t.Fatalf("%s: error %+v", n, f.Err)
			}
			var vm versionMsg
			_ = json.Unmarshal(f.Data, &vm)
			if vm.Version != v {
				t.Fatalf("%s: got version %d, want %d", n, vm.Version, v)
			}
			if f.ID != "" {
				acks++
			}
		}
		if acks != per {
			t.Fatalf("%s: %d acks, want %d", n, acks, per)
		}
	}
	if got := tc.store.versions("r"); got != 3*per {
		t.Fatalf("store has %d versions", got)
	}
}

// kill -9 of the owner: the survivors get room:left for its client, find a
// new owner, get a fresh room:state with every acknowledged version, and
// go on writing.
func TestClusterOwnerDies(t *testing.T) {
	tc := newTestCluster(t, "n1", "n2", "n3")
	a, b, c := newSession("a", "ua"), newSession("b", "ub"), newSession("c", "uc")
	var ca, cb, cc int
	join(t, tc.m["n1"], a, "r", &ca) // n1 takes the lease
	join(t, tc.m["n2"], b, "r", &cb)
	join(t, tc.m["n3"], c, "r", &cc)
	for i := 1; i <= 5; i++ {
		send(t, tc.m["n2"], b, protocol.TypeRoomUpdateStorage, fmt.Sprint("w", i), map[string]any{"room_id": "r", "ops": addOp(fmt.Sprint("k", i), i)})
		b.wait(t, &cb, "ack", isType(protocol.TypeRoomStorageUpdated, fmt.Sprint("w", i)))
	}
	tc.net.kill("n1")
	b.wait(t, &cb, "room:left a", func(f frame) bool {
		return f.Type == protocol.TypeRoomLeft && json.Valid(f.Data) && string(f.Data) != "" && containsClient(f.Data, "a")
	})
	c.wait(t, &cc, "room:left a", func(f frame) bool { return f.Type == protocol.TypeRoomLeft && containsClient(f.Data, "a") })
	st := decodeState(t, b.wait(t, &cb, "fresh room:state", unsolicited(protocol.TypeRoomState)))
	if st.Storage.Version != 5 {
		t.Fatalf("fresh state at version %d, want 5 (acknowledged)", st.Storage.Version)
	}
	c.wait(t, &cc, "fresh room:state", unsolicited(protocol.TypeRoomState))
	send(t, tc.m["n3"], c, protocol.TypeRoomUpdateStorage, "after", map[string]any{"room_id": "r", "ops": addOp("after", 6)})
	f := c.wait(t, &cc, "ack after failover", func(f frame) bool { return f.ID == "after" })
	var v versionMsg
	_ = json.Unmarshal(f.Data, &v)
	if f.Type != protocol.TypeRoomStorageUpdated || v.Version != 6 {
		t.Fatalf("after failover: %s %s %+v", f.Type, f.Data, f.Err)
	}
	b.wait(t, &cb, "v6 on n2", isType(protocol.TypeRoomStorageUpdated, ""))
}

// eventually waits (up to 5 s) for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func containsClient(data json.RawMessage, id string) bool {
	var d struct {
		ClientID string `json:"client_id"`
	}
	return json.Unmarshal(data, &d) == nil && d.ClientID == id
}

// A fenced owner (another node took the lease and fenced the store) can no
// longer commit: its batch fails, and its clients move to the new owner.
func TestClusterDeposedOwnerIsFenced(t *testing.T) {
	tc := newTestCluster(t, "n1", "n2")
	a, b := newSession("a", "ua"), newSession("b", "ub")
	var ca, cb int
	join(t, tc.m["n1"], a, "r", &ca)
	join(t, tc.m["n2"], b, "r", &cb)
	// n2 takes the room behind n1's back (n1 looked dead to it).
	l, _, _ := tc.net.nodes["n2"].Lease(context.Background(), "r")
	nl, err := tc.net.nodes["n2"].Acquire(context.Background(), "r", &l)
	if err != nil {
		t.Fatal(err)
	}
	r, err := tc.m["n2"].takeRoom(context.Background(), "r", nl)
	if err != nil {
		t.Fatal(err)
	}
	tc.m["n2"].release(r)
	send(t, tc.m["n1"], a, protocol.TypeRoomUpdateStorage, "s", map[string]any{"room_id": "r", "ops": addOp("x", 1)})
	fresh := ca // the fresh state may come before or after the refusal
	f := a.wait(t, &ca, "answer", func(f frame) bool { return f.ID == "s" })
	if f.Type != "error" {
		t.Fatalf("a deposed owner committed: %s %s", f.Type, f.Data)
	}
	if n := tc.store.versions("r"); n != 0 {
		t.Fatalf("store has %d versions after a fenced commit", n)
	}
	// a ends up at the new owner with a fresh state and can write.
	a.wait(t, &fresh, "fresh state", unsolicited(protocol.TypeRoomState))
	send(t, tc.m["n1"], a, protocol.TypeRoomUpdateStorage, "s2", map[string]any{"room_id": "r", "ops": addOp("y", 1)})
	f = a.wait(t, &ca, "ack", func(f frame) bool { return f.ID == "s2" })
	if f.Type != protocol.TypeRoomStorageUpdated {
		t.Fatalf("after moving: %s %+v", f.Type, f.Err)
	}
}

func TestClusterHandover(t *testing.T) {
	tc := newTestCluster(t, "n1", "n2", "n3")
	b, c := newSession("b", "ub"), newSession("c", "uc")
	var cb, cc int
	a := newSession("a", "ua")
	var ca int
	join(t, tc.m["n1"], a, "r", &ca)
	join(t, tc.m["n2"], b, "r", &cb)
	join(t, tc.m["n3"], c, "r", &cc)
	send(t, tc.m["n2"], b, protocol.TypeRoomUpdateStorage, "w", map[string]any{"room_id": "r", "ops": addOp("k", 1)})
	b.wait(t, &cb, "ack", isType(protocol.TypeRoomStorageUpdated, "w"))
	// Drain n1: its client leaves, then it hands the room over.
	tc.m["n1"].Disconnected(a, true)
	b.wait(t, &cb, "room:left a", isType(protocol.TypeRoomLeft, ""))
	tc.m["n1"].Handover(context.Background())
	st := decodeState(t, b.wait(t, &cb, "fresh state from the new owner", unsolicited(protocol.TypeRoomState)))
	if st.Storage.Version != 1 {
		t.Fatalf("after handover: %+v", st)
	}
	// c's node syncs with the new owner too: b learns of c from the state
	// or from a room:joined right after it (the new owner takes each
	// node's clients as that node's sync arrives).
	if !memberIDs(st)["c"] {
		b.wait(t, &cb, "room:joined c", func(f frame) bool { return f.Type == protocol.TypeRoomJoined && containsClient(f.Data, "c") })
	}
	c.wait(t, &cc, "fresh state on n3", unsolicited(protocol.TypeRoomState))
	send(t, tc.m["n3"], c, protocol.TypeRoomUpdateStorage, "w2", map[string]any{"room_id": "r", "ops": addOp("k2", 2)})
	f := c.wait(t, &cc, "ack after handover", func(f frame) bool { return f.ID == "w2" })
	if f.Type != protocol.TypeRoomStorageUpdated {
		t.Fatalf("after handover: %s %+v", f.Type, f.Err)
	}
	if l, ok, _ := tc.net.nodes["n2"].Lease(context.Background(), "r"); !ok || l.Node == "n1" {
		t.Fatalf("lease after handover: %+v %v", l, ok)
	}
}

// Events reach only nodes with clients in the room.
func TestClusterInterest(t *testing.T) {
	tc := newTestCluster(t, "n1", "n2", "n3")
	a, b := newSession("a", "ua"), newSession("b", "ub")
	var ca, cb int
	join(t, tc.m["n1"], a, "r", &ca)
	join(t, tc.m["n2"], b, "r", &cb)
	if subs := tc.net.subscribers("r"); fmt.Sprint(subs) != "[n1 n2]" {
		t.Fatalf("subscribers: %v", subs)
	}
	tc.net.mu.Lock()
	before := tc.net.sent["r"]
	tc.net.mu.Unlock()
	send(t, tc.m["n1"], a, protocol.TypeRoomBroadcast, "", map[string]any{"room_id": "r", "event": 1})
	b.wait(t, &cb, "event", isType(protocol.TypeRoomEvent, ""))
	tc.net.mu.Lock()
	after := tc.net.sent["r"]
	tc.net.mu.Unlock()
	// The owner (n1) publishes once; only n2 has other clients... n1 is
	// subscribed too (it has a client) and ignores its own publication.
	if after-before != 2 {
		t.Fatalf("one room event was delivered to %d nodes, want 2 (the nodes with clients)", after-before)
	}
}

// A lost event shows as a gap: the node resyncs and its clients get a
// fresh room:state.
func TestClusterGapResyncs(t *testing.T) {
	tc := newTestCluster(t, "n1", "n2")
	a, b := newSession("a", "ua"), newSession("b", "ub")
	var ca, cb int
	join(t, tc.m["n1"], a, "r", &ca)
	join(t, tc.m["n2"], b, "r", &cb)
	// Make n2 miss one event: pretend it delivered one more than it did.
	e, _ := tc.m["n2"].edgeFor("r", false)
	e.mu.Lock()
	e.seq--
	e.mu.Unlock()
	send(t, tc.m["n1"], a, protocol.TypeRoomBroadcast, "", map[string]any{"room_id": "r", "event": 1})
	st := decodeState(t, b.wait(t, &cb, "fresh room:state", unsolicited(protocol.TypeRoomState)))
	if st.MemberCount != 2 {
		t.Fatalf("fresh state: %+v", st)
	}
	send(t, tc.m["n1"], a, protocol.TypeRoomBroadcast, "", map[string]any{"room_id": "r", "event": 2})
	b.wait(t, &cb, "event after resync", isType(protocol.TypeRoomEvent, ""))
}

// REST storage through a node that does not own the room goes through the
// owner: clients everywhere see it, and later writes still work.
func TestClusterRESTThroughOtherNode(t *testing.T) {
	tc := newTestCluster(t, "n1", "n2", "n3")
	a, b := newSession("a", "ua"), newSession("b", "ub")
	var ca, cb int
	join(t, tc.m["n1"], a, "r", &ca)
	join(t, tc.m["n2"], b, "r", &cb)
	v, err := tc.m["n3"].Patch(context.Background(), "r", "api", json.RawMessage(`[{"op":"add","path":"/rest","value":1}]`), nil)
	if err != nil || v != 1 {
		t.Fatalf("patch through n3: %d %v", v, err)
	}
	a.wait(t, &ca, "rest update on n1", isType(protocol.TypeRoomStorageUpdated, ""))
	b.wait(t, &cb, "rest update on n2", isType(protocol.TypeRoomStorageUpdated, ""))
	ver, data, err := tc.m["n3"].Snapshot(context.Background(), "r")
	if err != nil || ver != 1 || string(data) != `{"rest":1}` {
		t.Fatalf("snapshot through n3: %d %s %v", ver, data, err)
	}
	send(t, tc.m["n2"], b, protocol.TypeRoomUpdateStorage, "w", map[string]any{"room_id": "r", "ops": addOp("ws", 2)})
	f := b.wait(t, &cb, "ack", func(f frame) bool { return f.ID == "w" })
	if f.Type != protocol.TypeRoomStorageUpdated {
		t.Fatalf("write after REST: %s %+v", f.Type, f.Err)
	}
	// REST on a room nobody is in: this node loads it, then lets it go.
	if _, _, err := tc.m["n3"].Snapshot(context.Background(), "idle"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the idle room's lease released after a REST read", func() bool {
		_, ok, _ := tc.net.nodes["n3"].Lease(context.Background(), "idle")
		return !ok
	})
}

// A permission change decided on one node reaches the user's clients on
// every node.
func TestClusterRefreshUser(t *testing.T) {
	tc := newTestCluster(t, "n1", "n2", "n3")
	a, b := newSession("a", "ua"), newSession("b", "ub")
	var ca, cb int
	join(t, tc.m["n1"], a, "r", &ca)
	join(t, tc.m["n2"], b, "r", &cb)
	tc.acc.deny("ub", access.Read|access.Write|access.Presence)
	tc.m["n3"].RefreshUser(context.Background(), "r", "ub")
	b.wait(t, &cb, "own room:left", func(f frame) bool { return f.Type == protocol.TypeRoomLeft && containsClient(f.Data, "b") })
	a.wait(t, &ca, "room:left b", func(f frame) bool { return f.Type == protocol.TypeRoomLeft && containsClient(f.Data, "b") })
	send(t, tc.m["n2"], b, protocol.TypeRoomUpdateStorage, "w", map[string]any{"room_id": "r", "ops": addOp("x", 1)})
	f := b.wait(t, &cb, "refusal", func(f frame) bool { return f.ID == "w" })
	if f.Type != "error" || f.Err.Code != protocol.CodeNotFound {
		t.Fatalf("removed client wrote: %s %+v", f.Type, f.Err)
	}
	// Write lost, read kept: the client stays but cannot write. The
	// refresh reaches n1 asynchronously: wait until the owner holds a's
	// new permissions, then write.
	tc.acc.deny("ua", access.Write)
	tc.m["n3"].RefreshUser(context.Background(), "r", "ua")
	eventually(t, "a's write permission taken away at the owner", func() bool {
		r := tc.m["n1"].owned("r", nil)
		if r == nil {
			return false
		}
		defer tc.m["n1"].release(r)
		r.mu.Lock()
		defer r.mu.Unlock()
		c := r.clients["a"]
		return c != nil && c.perms&access.Write == 0
	})
	send(t, tc.m["n1"], a, protocol.TypeRoomUpdateStorage, "wa", map[string]any{"room_id": "r", "ops": addOp("y", 1)})
	f = a.wait(t, &ca, "answer", func(f frame) bool { return f.ID == "wa" })
	if f.Type != "error" || f.Err.Code != protocol.CodeForbidden {
		t.Fatalf("write after losing write permission: %s %+v", f.Type, f.Err)
	}
	r := tc.m["n1"].owned("r", nil)
	if r == nil {
		t.Fatal("room r left memory")
	}
	defer tc.m["n1"].release(r)
	r.mu.Lock()
	_, in := r.clients["a"]
	r.mu.Unlock()
	if !in {
		t.Fatal("a left the room; it kept read permission")
	}
}

// Node messages are at most once: a join or a resync whose message or
// answer is lost is retried (syncTimeout), and the client still gets its
// room:state.
func TestClusterLostMessagesRetried(t *testing.T) {
	tc := newTestCluster(t, "n1", "n2") // syncTimeout: testSyncTimeout
	a, b := newSession("a", "ua"), newSession("b", "ub")
	var ca, cb int
	join(t, tc.m["n1"], a, "r", &ca)

	// The first join message from n2 is lost: b still gets its answer.
	lost := map[string]int{}
	var mu sync.Mutex
	tc.net.mu.Lock()
	tc.net.drop = func(from, to string, msg nodeMsg) bool {
		mu.Lock()
		defer mu.Unlock()
		if (msg.Kind == kindJoin || msg.Kind == kindSync) && lost[msg.Kind] == 0 {
			lost[msg.Kind]++
			return true
		}
		return false
	}
	tc.net.mu.Unlock()
	st := join(t, tc.m["n2"], b, "r", &cb)
	if st.MemberCount != 2 {
		t.Fatalf("state after a lost join: %+v", st)
	}
	mu.Lock()
	if lost[kindJoin] != 1 || lost[kindSync] != 1 {
		t.Fatalf("lost: %v (want one join and one sync lost)", lost)
	}
	mu.Unlock()
	a.wait(t, &ca, "room:joined b", isType(protocol.TypeRoomJoined, ""))
	send(t, tc.m["n2"], b, protocol.TypeRoomBroadcast, "", map[string]any{"room_id": "r", "event": 1})
	a.wait(t, &ca, "event from b", isType(protocol.TypeRoomEvent, ""))
}

// On one node a commit conflict (the store already has the version: some
// other writer) reloads the room from the store: the sender hears
// internal, every client gets a fresh room:state with the stored version,
// and writing goes on from there (no rollback to a stale copy).
func TestSingleNodeConflictReloads(t *testing.T) {
	m, st, _ := newSingle(t)
	a, b := newSession("a", "ua"), newSession("b", "ub")
	var ca, cb int
	join(t, m, a, "r", &ca)
	join(t, m, b, "r", &cb)
	send(t, m, a, protocol.TypeRoomUpdateStorage, "s1", map[string]any{"room_id": "r", "ops": addOp("one", 1)})
	a.wait(t, &ca, "ack v1", isType(protocol.TypeRoomStorageUpdated, "s1"))
	// Another writer stores version 2 behind the room's back.
	if err := st.append(store.DocUpdate{RoomID: "r", Version: 2, ClientID: "other",
		Ops: json.RawMessage(`[{"op":"add","path":"/other","value":2}]`)}); err != nil {
		t.Fatal(err)
	}
	send(t, m, a, protocol.TypeRoomUpdateStorage, "s2", map[string]any{"room_id": "r", "ops": addOp("two", 2)})
	f := a.wait(t, &ca, "refusal of s2", func(f frame) bool { return f.ID == "s2" })
	if f.Type != "error" || f.Err.Code != protocol.CodeInternal {
		t.Fatalf("s2: %+v", f)
	}
	for _, s := range []*fakeSession{a, b} {
		cur := 0
		st := decodeState(t, s.wait(t, &cur, "fresh room:state", func(f frame) bool {
			return f.Type == protocol.TypeRoomState && f.ID == ""
		}))
		if st.Storage.Version != 2 || !strings.Contains(string(st.Storage.Data), `"other":2`) {
			t.Fatalf("%s: fresh state %+v %s", s.id, st.Storage, st.Storage.Data)
		}
	}
	eventually(t, "room reloaded", func() bool {
		send(t, m, a, protocol.TypeRoomUpdateStorage, "s3", map[string]any{"room_id": "r", "ops": addOp("three", 3)})
		f := a.wait(t, &ca, "answer to s3", func(f frame) bool { return f.ID == "s3" })
		return f.Type == protocol.TypeRoomStorageUpdated
	})
	if n := st.versions("r"); n != 3 {
		t.Fatalf("store has %d versions, want 3", n)
	}
}

// A client that joins while its node resyncs a room is answered only once
// the owner has it: its first request right after room:state is applied,
// never refused with not_found.
func TestClusterJoinDuringResync(t *testing.T) {
	tc := newTestCluster(t, "n1", "n2")
	a, b := newSession("a", "ua"), newSession("b", "ub")
	var ca, cb int
	join(t, tc.m["n1"], a, "r", &ca)
	join(t, tc.m["n2"], b, "r", &cb)
	release := make(chan struct{})
	var once sync.Once
	held := make(chan struct{})
	tc.net.mu.Lock()
	tc.net.drop = func(from, to string, msg nodeMsg) bool {
		if msg.Kind == kindSync && from == "n2" {
			once.Do(func() { close(held); <-release }) // hold the first sync in flight
		}
		return false
	}
	tc.net.mu.Unlock()
	e, _ := tc.m["n2"].edgeFor("r", false)
	go tc.m["n2"].resync(e)
	<-held
	c := newSession("c", "uc")
	var cc int
	send(t, tc.m["n2"], c, protocol.TypeRoomJoin, "jc", map[string]any{"room_id": "r"})
	close(release)
	f := c.wait(t, &cc, "c's room:state", func(f frame) bool { return f.ID == "jc" })
	if f.Type != protocol.TypeRoomState {
		t.Fatalf("join during resync: %s %+v", f.Type, f.Err)
	}
	send(t, tc.m["n2"], c, protocol.TypeRoomUpdateStorage, "w", map[string]any{"room_id": "r", "ops": addOp("c", 1)})
	f = c.wait(t, &cc, "answer to c's write", func(f frame) bool { return f.ID == "w" })
	if f.Type != protocol.TypeRoomStorageUpdated {
		t.Fatalf("first write after joining during a resync: %s %+v", f.Type, f.Err)
	}
}

// Clients of one node joining a room nobody holds, all at once: one owner,
// one copy of the room, everyone sees everyone.
func TestClusterConcurrentFirstJoins(t *testing.T) {
	tc := newTestCluster(t, "n1", "n2")
	const n = 16
	sess := make([]*fakeSession, n)
	var wg sync.WaitGroup
	for i := range sess {
		sess[i] = newSession(fmt.Sprint("c", i), fmt.Sprint("u", i))
		node := []string{"n1", "n2"}[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			send(t, tc.m[node], sess[i], protocol.TypeRoomJoin, "j", map[string]any{"room_id": "r"})
		}()
	}
	wg.Wait()
	for _, s := range sess {
		cur := 0
		if f := s.wait(t, &cur, "join answer", func(f frame) bool { return f.ID == "j" }); f.Type != protocol.TypeRoomState {
			t.Fatalf("%s: join answered %s %+v", s.id, f.Type, f.Err)
		}
	}
	if tc.m["n1"].LiveRooms()+tc.m["n2"].LiveRooms() != 1 {
		t.Fatalf("live copies of the room: n1 %d, n2 %d", tc.m["n1"].LiveRooms(), tc.m["n2"].LiveRooms())
	}
	send(t, tc.m["n1"], sess[0], protocol.TypeRoomBroadcast, "", map[string]any{"room_id": "r", "event": "hi"})
	for _, s := range sess[1:] {
		cur := 0
		s.wait(t, &cur, "the broadcast", isType(protocol.TypeRoomEvent, ""))
	}
}

// ownerMembers returns the client ids the owner (on node) has in room.
func ownerMembers(tc *testCluster, node, room string) []string {
	r := tc.m[node].owned(room, nil)
	if r == nil {
		return nil
	}
	defer tc.m[node].release(r)
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, c := range r.order {
		out = append(out, c.id)
	}
	return out
}

// A connection that closes while its join is unanswered never stays a
// member (the review found 54 of 100 such connections listed forever).
func TestClusterDisconnectDuringJoin(t *testing.T) {
	tc := newTestCluster(t, "n1", "n2")
	a := newSession("a", "ua")
	var ca int
	join(t, tc.m["n1"], a, "r", &ca)
	for i := 0; i < 20; i++ {
		b := newSession(fmt.Sprint("b", i), "ub")
		send(t, tc.m["n2"], b, protocol.TypeRoomJoin, "j", map[string]any{"room_id": "r"})
		tc.m["n2"].Disconnected(b, true)
	}
	// A barrier: d's join from n2 is answered after every join above
	// (node messages are ordered).
	d := newSession("d", "ud")
	var cd int
	join(t, tc.m["n2"], d, "r", &cd)
	eventually(t, "only a and d in the room", func() bool {
		return fmt.Sprint(ownerMembers(tc, "n1", "r")) == "[a d]"
	})
	if n := tc.m["n2"].TrackedConnections(); n != 1 {
		t.Fatalf("n2 tracks %d connections, want 1 (d)", n)
	}
}

// A leave and a join sent back to back by one connection: every join is
// answered, the connection ends in the room exactly once, and it is gone
// everywhere after it disconnects (the review found unanswered joins and
// permanent ghosts).
func TestClusterRapidLeaveJoin(t *testing.T) {
	tc := newTestCluster(t, "n1", "n2")
	a, c, b := newSession("a", "ua"), newSession("c", "uc"), newSession("b", "ub")
	var ca, cc, cb int
	join(t, tc.m["n1"], a, "r", &ca)
	join(t, tc.m["n2"], c, "r", &cc) // a companion on b's node
	join(t, tc.m["n2"], b, "r", &cb)
	for i := 0; i < 30; i++ {
		send(t, tc.m["n2"], b, protocol.TypeRoomLeave, fmt.Sprint("l", i), map[string]any{"room_id": "r"})
		id := fmt.Sprint("j", i)
		send(t, tc.m["n2"], b, protocol.TypeRoomJoin, id, map[string]any{"room_id": "r"})
		if f := b.wait(t, &cb, "answer to "+id, func(f frame) bool { return f.ID == id }); f.Type != protocol.TypeRoomState {
			t.Fatalf("%s: %s %+v", id, f.Type, f.Err)
		}
	}
	send(t, tc.m["n2"], b, protocol.TypeRoomUpdatePresence, "p", map[string]any{"room_id": "r", "presence": map[string]any{"k": 1}})
	if f := b.wait(t, &cb, "presence answer", func(f frame) bool { return f.ID == "p" }); f.Type != protocol.TypeRoomPresenceUpdated {
		t.Fatalf("presence after the joins: %s %+v", f.Type, f.Err)
	}
	eventually(t, "b once at the owner", func() bool { return fmt.Sprint(ownerMembers(tc, "n1", "r")) == "[a c b]" })
	tc.m["n2"].Disconnected(b, true)
	eventually(t, "b gone at the owner", func() bool { return fmt.Sprint(ownerMembers(tc, "n1", "r")) == "[a c]" })
}

// A node that crashed and came back under the same id before anyone took
// its rooms: the lease still names it, but the new process does not hold
// the room. It adopts the lease when asked, so the others' clients go on
// (the review found them refused "moved to another node" forever).
func TestClusterRestartedOwnerAdoptsItsLease(t *testing.T) {
	tc := newTestCluster(t, "n1", "n2")
	a, b := newSession("a", "ua"), newSession("b", "ub")
	var ca, cb int
	join(t, tc.m["n1"], a, "r", &ca) // n1 owns r
	join(t, tc.m["n2"], b, "r", &cb)
	send(t, tc.m["n2"], b, protocol.TypeRoomUpdateStorage, "w1", map[string]any{"room_id": "r", "ops": addOp("one", 1)})
	b.wait(t, &cb, "ack w1", isType(protocol.TypeRoomStorageUpdated, "w1"))

	tc.net.kill("n1")
	// The restarted process: same id, nothing in memory.
	tc.m["n1"] = tc.newManager(t, "n1", newFakeCommitter(t, tc.store))

	b.wait(t, &cb, "room:left a", func(f frame) bool { return f.Type == protocol.TypeRoomLeft && containsClient(f.Data, "a") })
	st := decodeState(t, b.wait(t, &cb, "fresh state", unsolicited(protocol.TypeRoomState)))
	if st.Storage.Version != 1 {
		t.Fatalf("fresh state at version %d, want 1", st.Storage.Version)
	}
	send(t, tc.m["n2"], b, protocol.TypeRoomUpdateStorage, "w2", map[string]any{"room_id": "r", "ops": addOp("two", 2)})
	f := b.wait(t, &cb, "answer w2", func(f frame) bool { return f.ID == "w2" })
	if f.Type != protocol.TypeRoomStorageUpdated {
		t.Fatalf("write after the owner restarted: %s %+v", f.Type, f.Err)
	}
}

// countingRecords is the store as the access policy reads it, counting
// every read; err fails them all.
type countingRecords struct {
	reads atomic.Int64
	err   error
}

func (r *countingRecords) GetRoom(context.Context, string) (store.Room, error) {
	r.reads.Add(1)
	if r.err != nil {
		return store.Room{}, r.err
	}
	return store.Room{}, store.ErrNotFound
}

func (r *countingRecords) IsMember(context.Context, string, string) (bool, error) {
	r.reads.Add(1)
	return false, r.err
}

// TestJoinWithTokenGrantsReadsNoRecord: with the real access policy, a
// join whose token grants read, presence and write reads no room record
// (it would be one store read per join: the join storm's cost), and the
// member may then set presence and write; a token granting less still
// asks the store, and a failing store then refuses the join.
func TestJoinWithTokenGrantsReadsNoRecord(t *testing.T) {
	st := newFakeStore()
	rec := &countingRecords{}
	m := NewManager(testOptions, st, newFakeCommitter(t, st), &access.Policy{Records: rec}, metrics.New(nil), quietLog(), nil)
	a := newSession("a", "ua")
	a.claims = &auth.Claims{UserID: "ua", Rooms: map[string]auth.Perm{"*": auth.PermAll}}
	var ca int
	join(t, m, a, "r", &ca)
	send(t, m, a, protocol.TypeRoomUpdatePresence, "p", map[string]any{"room_id": "r", "presence": map[string]any{"x": 1}})
	a.wait(t, &ca, "presence reply", isType(protocol.TypeRoomPresenceUpdated, "p"))
	send(t, m, a, protocol.TypeRoomUpdateStorage, "s", map[string]any{"room_id": "r", "ops": addOp("k", 1)})
	a.wait(t, &ca, "storage ack", isType(protocol.TypeRoomStorageUpdated, "s"))
	if n := rec.reads.Load(); n != 0 {
		t.Fatalf("join with read+presence+write in the token read the store %d times", n)
	}

	b := newSession("b", "ub")
	b.claims = &auth.Claims{UserID: "ub", Rooms: map[string]auth.Perm{"r": auth.PermRead}}
	var cb int
	join(t, m, b, "r", &cb)
	if n := rec.reads.Load(); n == 0 {
		t.Fatal("join with a read-only token did not ask the store")
	}
	rec.err = errors.New("store down")
	c := newSession("c", "uc")
	c.claims = b.claims
	var cc int
	send(t, m, c, protocol.TypeRoomJoin, "j", map[string]any{"room_id": "r"})
	if f := c.wait(t, &cc, "join refused", func(f frame) bool { return f.ID == "j" }); f.Type != protocol.TypeError {
		t.Fatalf("join needing the store while it fails: %s, want an error", f.Type)
	}
}

// A request an edge forwards to an owner that stops answering (it hands
// the room over and closes, or dies, with the request queued or still on
// the wire: core NATS is at most once) is answered by the edge itself,
// once: room:update_storage with "may still be applied" (internal), the
// others with "moved; retry" (internal). CI saw a client wait forever for
// such an answer (TestClusterDrain). An answer from the owner that still
// comes later is not delivered a second time.
func TestClusterForwardedRequestsAnsweredWhenOwnerGoes(t *testing.T) {
	for _, how := range []string{"handover", "kill", "resync"} {
		t.Run(how, func(t *testing.T) {
			tc := newTestCluster(t, "n1", "n2", "n3")
			a, b := newSession("a", "ua"), newSession("b", "ub")
			var ca, cb int
			join(t, tc.m["n1"], a, "r", &ca) // n1 owns the room
			join(t, tc.m["n2"], b, "r", &cb)
			// From now on n1 hears nothing from n2: it has stopped
			// dispatching (draining) or the messages are lost.
			tc.net.mu.Lock()
			tc.net.drop = func(from, to string, msg nodeMsg) bool { return from == "n2" && to == "n1" && msg.Kind != kindSync }
			tc.net.mu.Unlock()
			send(t, tc.m["n2"], b, protocol.TypeRoomUpdateStorage, "w", map[string]any{"room_id": "r", "ops": addOp("k", 1)})
			send(t, tc.m["n2"], b, protocol.TypeRoomUpdatePresence, "p", map[string]any{"room_id": "r", "presence": map[string]any{"x": 1}})
			send(t, tc.m["n2"], b, protocol.TypeRoomBroadcast, "e0", map[string]any{"room_id": "r", "event": 0})
			switch how {
			case "handover":
				tc.m["n1"].Disconnected(a, true)
				tc.m["n1"].Handover(context.Background())
			case "kill":
				tc.net.kill("n1")
			case "resync":
				tc.net.nodes["n2"].enqueue(tc.m["n2"].Resync)
			}
			w := b.wait(t, &cb, "an answer to w", func(f frame) bool { return f.ID == "w" })
			if w.Type != protocol.TypeError || w.Err == nil || w.Err.Code != protocol.CodeInternal || !strings.Contains(w.Err.Message, "may still be applied") {
				t.Fatalf("w answered %s %+v, want internal: may still be applied", w.Type, w.Err)
			}
			p := b.wait(t, &cb, "an answer to p", func(f frame) bool { return f.ID == "p" })
			if p.Type != protocol.TypeError || p.Err == nil || p.Err.Code != protocol.CodeInternal || !strings.Contains(p.Err.Message, notOwnerSuffix) {
				t.Fatalf("p answered %s %+v, want internal: %s", p.Type, p.Err, notOwnerSuffix)
			}
			e0 := b.wait(t, &cb, "an answer to e0", func(f frame) bool { return f.ID == "e0" })
			if e0.Type != protocol.TypeError || e0.Err == nil || !strings.Contains(e0.Err.Message, "may have been delivered") {
				t.Fatalf("e0 answered %s %+v, want internal: may have been delivered", e0.Type, e0.Err)
			}
			// The owner's own answer, arriving after all, is dropped.
			late := encodeNodeMsg(nodeMsg{Kind: kindReply, From: "n1", Room: "r", Conn: "b", ReqID: "w", Type: protocol.TypeRoomStorageUpdated,
				Data: json.RawMessage(`{"room_id":"r","version":1}`)})
			done := make(chan struct{})
			tc.net.nodes["n2"].enqueue(func() { tc.m["n2"].NodeMessage(late); close(done) })
			<-done
			// A request after that is answered normally by whoever owns
			// the room now (the fresh room:state first).
			tc.net.mu.Lock()
			tc.net.drop = nil
			tc.net.mu.Unlock()
			if how == "resync" {
				// n1 still owns the room; it answers again.
				b.wait(t, &cb, "fresh room:state", unsolicited(protocol.TypeRoomState))
			} else {
				b.wait(t, &cb, "fresh room:state from the new owner", unsolicited(protocol.TypeRoomState))
			}
			send(t, tc.m["n2"], b, protocol.TypeRoomBroadcast, "e", map[string]any{"room_id": "r", "event": 1})
			send(t, tc.m["n2"], b, protocol.TypeRoomUpdatePresence, "p2", map[string]any{"room_id": "r", "presence": map[string]any{"x": 2}})
			b.wait(t, &cb, "an answer to p2", isType(protocol.TypeRoomPresenceUpdated, "p2"))
			// Requests without an id are not kept (a broadcast without
			// one is never answered), and nothing answered stays kept.
			for range 3 {
				send(t, tc.m["n2"], b, protocol.TypeRoomBroadcast, "", map[string]any{"room_id": "r", "event": 2})
			}
			send(t, tc.m["n2"], b, protocol.TypeRoomBroadcast, "e2", map[string]any{"room_id": "r", "event": 3})
			b.wait(t, &cb, "the ack of e2", isType(protocol.TypeAck, "e2"))
			if n := tc.m["n2"].inflightForTest("r", "b"); n != 0 {
				t.Fatalf("%d requests still kept as in flight", n)
			}
			n := 0
			for _, f := range b.all() {
				if f.ID == "w" {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("w answered %d times, want once:\n%s", n, dump(b.all()))
			}
		})
	}
}

// inflightForTest is the number of requests of client conn kept as in
// flight on m's edge of room.
func (m *Manager) inflightForTest(room, conn string) int {
	e, _ := m.edgeFor(room, false)
	if e == nil {
		return 0
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	if lc := e.clients[conn]; lc != nil {
		for _, fs := range lc.inflight {
			n += len(fs)
		}
	}
	return n
}

// pausingSession is a fakeSession whose n-th Name() call after arm(n)
// blocks until released: routeCluster reads the session's name between
// reading the edge's lease and recording the request, so the test can
// run a NodeDown in that gap.
type pausingSession struct {
	*fakeSession
	mu                sync.Mutex
	left              int
	entered, released chan struct{}
}

func (s *pausingSession) arm(n int) {
	s.mu.Lock()
	s.left, s.entered, s.released = n, make(chan struct{}), make(chan struct{})
	s.mu.Unlock()
}

func (s *pausingSession) Name() string {
	s.mu.Lock()
	block := false
	if s.left > 0 {
		s.left--
		block = s.left == 0
	}
	en, rel := s.entered, s.released
	s.mu.Unlock()
	if block {
		close(en)
		<-rel
	}
	return ""
}

// A request whose lease was read just before its owner went (NodeDown ran
// between routeCluster reading the lease and recording the request) used
// to be sent to the dead owner after NodeDown had answered what was
// recorded: it got no answer at all (found in review).
func TestClusterForwardRacingNodeDownIsAnswered(t *testing.T) {
	tc := newTestCluster(t, "n1", "n2", "n3")
	a := newSession("a", "ua")
	var ca, cb int
	join(t, tc.m["n1"], a, "r", &ca)
	b := &pausingSession{fakeSession: newSession("b", "ub")}
	send(t, tc.m["n2"], b, protocol.TypeRoomJoin, "jb", map[string]any{"room_id": "r"})
	b.wait(t, &cb, "room:state", isType(protocol.TypeRoomState, "jb"))
	b.arm(2) // 1: the origin built for the request, 2: routeCluster between its locks
	p := protocol.Envelope{Type: protocol.TypeRoomUpdatePresence, ID: "p", Data: json.RawMessage(`{"room_id":"r","presence":{"x":1}}`)}
	go func() { // not send: it may call t.Fatal, which needs the test's goroutine
		if err := tc.m["n2"].Handle(context.Background(), b, p); err != nil {
			b.ReplyError(p.ID, protocol.AsError(err))
		}
	}()
	<-b.entered
	tc.net.kill("n1")
	// n2 has handled the NodeDown (room:left goes out with it).
	b.wait(t, &cb, "room:left a", func(f frame) bool { return f.Type == protocol.TypeRoomLeft && containsClient(f.Data, "a") })
	close(b.released)
	ans := b.wait(t, &cb, "an answer to p", func(f frame) bool { return f.ID == "p" })
	if ans.Type != protocol.TypeError || ans.Err.Code != protocol.CodeInternal {
		t.Fatalf("p answered %s %+v, want internal (retry)", ans.Type, ans.Err)
	}
	if n := tc.m["n2"].inflightForTest("r", "b"); n != 0 {
		t.Fatalf("%d requests still kept as in flight", n)
	}
}

// An owner's answer is matched to a request sent to that owner: after the
// edge answered request "x" itself and the client sent "x" again to
// another owner, the first owner's late answer is not taken for the
// second request's (found in review).
func TestForwardedAnswerMatchedToItsOwner(t *testing.T) {
	e := &edge{id: "r"}
	lc := &localClient{}
	e.trackLocked(lc, "x", Lease{Node: "n3", Epoch: 2}, kindPresence)
	if lc.answeredLocked("x", "n1") {
		t.Fatal("n1's late answer was taken for the request sent to n3")
	}
	if !lc.answeredLocked("x", "n3") || len(lc.inflight) != 0 {
		t.Fatalf("n3's answer: inflight %v", lc.inflight)
	}
	if !lc.answeredLocked("", "n1") {
		t.Fatal("an answer without an id must be delivered")
	}
}

// A join with since_version that the room's owner answers through a
// resync (the join message was lost, or refused while the room changed
// owner) still gets the updates after that version, not the whole
// document: CI saw TestClusterCatchUp get the document when its join
// reached an owner that was unloading the room. Another client already
// in the room gets the document in its fresh room:state, as before.
func TestClusterJoinAnsweredByResyncKeepsCatchUp(t *testing.T) {
	tc := newTestCluster(t, "n1", "n2")
	a, b, c := newSession("a", "ua"), newSession("b", "ub"), newSession("c", "uc")
	var ca, cb, cc int
	join(t, tc.m["n1"], a, "r", &ca)
	join(t, tc.m["n2"], c, "r", &cc)
	for i := 1; i <= 5; i++ {
		send(t, tc.m["n1"], a, protocol.TypeRoomUpdateStorage, fmt.Sprint("w", i), map[string]any{"room_id": "r", "ops": addOp(fmt.Sprint("k", i), i)})
		a.wait(t, &ca, "ack", isType(protocol.TypeRoomStorageUpdated, fmt.Sprint("w", i)))
	}
	var lost atomic.Int32
	tc.net.mu.Lock()
	tc.net.drop = func(from, to string, msg nodeMsg) bool {
		return msg.Kind == kindJoin && lost.Add(1) == 1
	}
	tc.net.mu.Unlock()
	send(t, tc.m["n2"], b, protocol.TypeRoomJoin, "jb", map[string]any{"room_id": "r", "since_version": 3})
	st := decodeState(t, b.wait(t, &cb, "room:state for jb", isType(protocol.TypeRoomState, "jb")))
	if lost.Load() != 1 {
		t.Fatalf("%d joins dropped, want the first one", lost.Load())
	}
	var got []int64
	for _, u := range st.Storage.Updates {
		got = append(got, u.Version)
	}
	if st.Storage.Version != 5 || len(got) != 2 || got[0] != 4 || got[1] != 5 || st.Storage.Data != nil {
		t.Fatalf("join answered by a resync: version %d, updates %v, data %s; want version 5, updates [4 5], no data",
			st.Storage.Version, got, st.Storage.Data)
	}
	cs := decodeState(t, c.wait(t, &cc, "c's fresh room:state", unsolicited(protocol.TypeRoomState)))
	if cs.Storage.Version != 5 || cs.Storage.Data == nil || cs.Storage.Updates != nil {
		t.Fatalf("c's fresh state: version %d, data %s, updates %v; want the document at version 5", cs.Storage.Version, cs.Storage.Data, cs.Storage.Updates)
	}
}
