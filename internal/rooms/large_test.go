package rooms

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/metrics"
	"github.com/parleyhq/parley/internal/protocol"
)

// Large rooms (large.go, PROTOCOL.md v1.1 §3): paging, coalesced joins and
// leaves, coalesced presence, and the cluster's rosters.

func newLarge(t *testing.T, limit int, coalescePresence bool) *Manager {
	t.Helper()
	st := newFakeStore()
	opts := testOptions
	opts.LargeRoomMembers, opts.LargeRoomInterval, opts.PresenceCoalesce = limit, 30*time.Millisecond, coalescePresence
	return NewManager(opts, st, newFakeCommitter(t, st), &fakeAccess{}, metrics.New(nil), quietLog(), nil)
}

type pageMsg struct {
	Members []struct {
		ClientID string `json:"client_id"`
	} `json:"members"`
	NextAfter *string `json:"next_after"`
}

type changedMsg struct {
	Joined []struct {
		ClientID string                     `json:"client_id"`
		Presence map[string]json.RawMessage `json:"presence"`
	} `json:"joined"`
	Left []struct {
		ClientID string `json:"client_id"`
		UserID   string `json:"user_id"`
	} `json:"left"`
	MemberCount int `json:"member_count"`
}

// view is what one client knows of a large room's members, built from
// room:state, room:joined/left and room:members_changed as a client would.
type view struct {
	members map[string]bool
	count   int
}

func (v *view) apply(t *testing.T, f frame) {
	switch f.Type {
	case protocol.TypeRoomJoined:
		var d struct {
			ClientID string `json:"client_id"`
		}
		_ = json.Unmarshal(f.Data, &d)
		v.members[d.ClientID] = true
		v.count++
	case protocol.TypeRoomLeft:
		var d struct {
			ClientID string `json:"client_id"`
		}
		_ = json.Unmarshal(f.Data, &d)
		delete(v.members, d.ClientID)
		v.count--
	case protocol.TypeRoomMembersChanged:
		var d changedMsg
		if err := json.Unmarshal(f.Data, &d); err != nil {
			t.Fatalf("members_changed %s: %v", f.Data, err)
		}
		for _, j := range d.Joined {
			v.members[j.ClientID] = true
		}
		for _, l := range d.Left {
			delete(v.members, l.ClientID)
		}
		v.count = d.MemberCount
	}
}

func countType(s *fakeSession, typ string) int {
	n := 0
	for _, f := range s.all() {
		if f.Type == typ {
			n++
		}
	}
	return n
}

func TestLargeRoomFirstPageAndPaging(t *testing.T) {
	m := newLarge(t, 3, false)
	var ss []*fakeSession
	for i := range 8 {
		s := newSession(fmt.Sprintf("c%d", i), fmt.Sprintf("u%d", i))
		var cur int
		st := join(t, m, s, "big", &cur)
		ss = append(ss, s)
		want := min(i+1, 3)
		if st.MemberCount != i+1 || len(st.Members) != want {
			t.Fatalf("joiner %d: member_count %d, %d members listed; want %d, %d", i, st.MemberCount, len(st.Members), i+1, want)
		}
	}
	last := ss[7]
	var raw struct {
		MembersNext string `json:"members_next"`
	}
	f := last.all()[0]
	_ = json.Unmarshal(f.Data, &raw)
	if raw.MembersNext == "" {
		t.Fatalf("a large room's state has no members_next: %s", f.Data)
	}
	// Page through everything after the first page, two at a time.
	seen := map[string]int{}
	for _, mm := range decodeState(t, f).Members {
		seen[mm.ClientID]++
	}
	after, cur := raw.MembersNext, len(last.all())
	for i := 0; ; i++ {
		id := fmt.Sprint("pg", i)
		send(t, m, last, protocol.TypeRoomMembers, id, map[string]any{"room_id": "big", "after": after, "limit": 2})
		f := last.wait(t, &cur, "members page", isType(protocol.TypeRoomMembersPage, id))
		var p pageMsg
		if err := json.Unmarshal(f.Data, &p); err != nil {
			t.Fatal(err)
		}
		for _, mm := range p.Members {
			seen[mm.ClientID]++
		}
		if p.NextAfter == nil {
			break
		}
		after = *p.NextAfter
	}
	for _, s := range ss {
		if seen[s.id] != 1 {
			t.Fatalf("paging listed %s %d times (all: %v)", s.id, seen[s.id], seen)
		}
	}
	for _, bad := range []map[string]any{
		{"room_id": "big", "after": "x"},
		{"room_id": "big", "limit": 0},
		{"room_id": "big", "limit": MaxMembersPage + 1},
		{"room_id": "big", "after": "123456789012345678901"},
	} {
		send(t, m, last, protocol.TypeRoomMembers, "bad", bad)
		f := last.wait(t, &cur, "refusal", func(f frame) bool { return f.ID == "bad" })
		if f.Err == nil || f.Err.Code != protocol.CodeBadRequest {
			t.Fatalf("room:members %v: got %s %+v", bad, f.Type, f.Err)
		}
	}
	// Someone not in the room may not list it.
	out := newSession("out", "uo")
	var oc int
	send(t, m, out, protocol.TypeRoomMembers, "o", map[string]any{"room_id": "big"})
	if f := out.wait(t, &oc, "refusal", func(f frame) bool { return f.ID == "o" }); f.Err == nil || f.Err.Code != protocol.CodeNotFound {
		t.Fatalf("room:members from outside: %s %+v", f.Type, f.Err)
	}
}

// Above the limit, joins and leaves reach members as room:members_changed
// batches, not one frame each, and every member's view converges to the
// room's real membership and count, including a client that joined and
// left within one batch and one whose snapshot was taken mid-batch.
func TestLargeRoomMembershipCoalesced(t *testing.T) {
	m := newLarge(t, 3, false)
	const n = 30
	ss := make([]*fakeSession, n)
	views := make([]*view, n)
	for i := range n {
		ss[i] = newSession(fmt.Sprintf("c%02d", i), fmt.Sprintf("u%d", i))
		var cur int
		st := join(t, m, ss[i], "big", &cur)
		views[i] = &view{members: map[string]bool{}, count: st.MemberCount}
		for _, mm := range st.Members {
			views[i].members[mm.ClientID] = true
		}
	}
	flash := newSession("flash", "uf")
	var fc int
	join(t, m, flash, "big", &fc)
	send(t, m, flash, protocol.TypeRoomLeave, "l", map[string]any{"room_id": "big"})
	flash.wait(t, &fc, "own room:left", isType(protocol.TypeRoomLeft, "l"))
	m.Disconnected(ss[n-1], true) // a leave by disconnect

	// The first member: every later join reached it in a batch.
	first := ss[0]
	hasDisconnect := func(f frame) bool {
		var d changedMsg
		if f.Type != protocol.TypeRoomMembersChanged || json.Unmarshal(f.Data, &d) != nil {
			return false
		}
		for _, l := range d.Left {
			if l.ClientID == ss[n-1].id {
				return true
			}
		}
		return false
	}
	for _, s := range ss[:n-1] {
		var cur int
		s.wait(t, &cur, "the batch with the disconnect", hasDisconnect)
	}
	if j := countType(first, protocol.TypeRoomJoined); j != 2 {
		t.Fatalf("the first member got %d room:joined frames; want 2 (the room was large from the 4th member on)", j)
	}
	if c := countType(first, protocol.TypeRoomMembersChanged); c >= n-3 {
		t.Fatalf("%d room:members_changed for %d joins: not coalesced", c, n-3)
	}
	for i := range n - 1 {
		v := views[i]
		for _, f := range ss[i].all() {
			v.apply(t, f)
		}
		if v.count != n-1 {
			t.Fatalf("%s counts %d members, want %d", ss[i].id, v.count, n-1)
		}
		if v.members["flash"] || v.members[ss[n-1].id] {
			t.Fatalf("%s still lists a client that left", ss[i].id)
		}
	}
	// The first member knows everyone (it heard every join).
	if len(views[0].members) != n-1 {
		t.Fatalf("the first member lists %d members, want %d", len(views[0].members), n-1)
	}
}

// With PresenceCoalesce, a large room's members get the latest presence of
// each client once per tick; the sender still gets every reply at once.
func TestLargeRoomPresenceCoalesced(t *testing.T) {
	m := newLarge(t, 2, true)
	ss := make([]*fakeSession, 4)
	curs := make([]int, 4)
	for i := range ss {
		ss[i] = newSession(fmt.Sprintf("c%d", i), fmt.Sprintf("u%d", i))
		join(t, m, ss[i], "big", &curs[i])
	}
	for i := 1; i <= 5; i++ {
		send(t, m, ss[0], protocol.TypeRoomUpdatePresence, fmt.Sprint("p", i), map[string]any{"room_id": "big", "presence": map[string]any{"x": i}})
		ss[0].wait(t, &curs[0], "presence reply", isType(protocol.TypeRoomPresenceUpdated, fmt.Sprint("p", i)))
	}
	f := ss[1].wait(t, &curs[1], "presence batch", isType(protocol.TypeRoomPresenceBatch, ""))
	var d struct {
		Updates []struct {
			ClientID string                     `json:"client_id"`
			Presence map[string]json.RawMessage `json:"presence"`
		} `json:"updates"`
	}
	if err := json.Unmarshal(f.Data, &d); err != nil {
		t.Fatal(err)
	}
	last := d.Updates[len(d.Updates)-1]
	if last.ClientID != "c0" || string(last.Presence["x"]) != "5" {
		// Batches may split across ticks, but the last one holds the latest.
		var got frame
		for _, g := range ss[1].all() {
			if g.Type == protocol.TypeRoomPresenceBatch {
				got = g
			}
		}
		if err := json.Unmarshal(got.Data, &d); err != nil || string(d.Updates[len(d.Updates)-1].Presence["x"]) != "5" {
			t.Fatalf("presence batches end with %s, want c0's x=5", got.Data)
		}
	}
	if n := countType(ss[1], protocol.TypeRoomPresenceUpdated); n != 0 {
		t.Fatalf("a member got %d room:presence_updated in a coalescing room", n)
	}
	if n := countType(ss[1], protocol.TypeRoomPresenceBatch); n >= 5 {
		t.Fatalf("%d presence batches for 5 updates sent back to back: not coalesced", n)
	}
}

// Up to the limit nothing changes: room:joined per join and
// room:presence_updated per update, even with coalescing on.
func TestSmallRoomNotCoalesced(t *testing.T) {
	m := newLarge(t, 10, true)
	a, b := newSession("a", "ua"), newSession("b", "ub")
	var ca, cb int
	join(t, m, a, "r", &ca)
	join(t, m, b, "r", &cb)
	a.wait(t, &ca, "room:joined", isType(protocol.TypeRoomJoined, ""))
	send(t, m, b, protocol.TypeRoomUpdatePresence, "p", map[string]any{"room_id": "r", "presence": map[string]any{"x": 1}})
	a.wait(t, &ca, "room:presence_updated", isType(protocol.TypeRoomPresenceUpdated, ""))
	m.Disconnected(b, true)
	a.wait(t, &ca, "room:left", isType(protocol.TypeRoomLeft, ""))
}

// In a cluster, edges learn a large room's membership from the batches:
// when a node dies, the other edges tell their clients that its clients
// left, in one room:members_changed.
func TestClusterLargeRoomNodeDown(t *testing.T) {
	tc := newTestCluster(t, "n1", "n2", "n3")
	for _, m := range tc.m {
		m.opts.LargeRoomMembers, m.opts.LargeRoomInterval = 2, 30*time.Millisecond
	}
	owner := newSession("o", "uo")
	var oc int
	join(t, tc.m["n1"], owner, "big", &oc)
	watcher := newSession("w", "uw")
	var wc int
	join(t, tc.m["n2"], watcher, "big", &wc)
	for i := range 4 {
		s := newSession(fmt.Sprintf("d%d", i), fmt.Sprintf("ud%d", i))
		var c int
		join(t, tc.m["n3"], s, "big", &c)
	}
	v := &view{members: map[string]bool{}}
	// The watcher hears of every n3 client (room:joined while small, then
	// batches) before n3 dies.
	wcur := 0
	watcher.wait(t, &wcur, "all six members", func(f frame) bool {
		v.apply(t, f)
		return len(v.members) >= 4
	})
	tc.net.kill("n3")
	watcher.wait(t, &wcur, "the dead node's clients leave in one batch", func(f frame) bool {
		var d changedMsg
		return f.Type == protocol.TypeRoomMembersChanged && json.Unmarshal(f.Data, &d) == nil && len(d.Left) == 4 && d.MemberCount == 2
	})
	if n := countType(watcher, protocol.TypeRoomLeft); n != 0 {
		t.Fatalf("the watcher got %d room:left frames in a large room", n)
	}
}
