package chat

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/hub"
	"github.com/parleyhq/parley/internal/protocol"
)

// ------------------------------------------------ in-memory Cluster fake --

// memCluster is what NATS and the <cluster>_presence bucket are to real
// nodes: one revision counter, compare-and-set entries, ordered watches,
// a typing subject and NodeDown reports.
type memCluster struct {
	mu       sync.Mutex
	rev      uint64
	kv       map[string]memEntry
	watchers map[chan memEvent]struct{}
	typers   map[chan []byte]struct{}
	downs    map[string][]func(string)
	deletes  map[string]int // successful DeleteStatus per user (offline transitions)
}

type memEntry struct {
	val []byte
	rev uint64
}

type memEvent struct {
	user string
	val  []byte
	rev  uint64
}

func newMemCluster() *memCluster {
	return &memCluster{kv: map[string]memEntry{}, watchers: map[chan memEvent]struct{}{},
		typers: map[chan []byte]struct{}{}, downs: map[string][]func(string){}, deletes: map[string]int{}}
}

func (c *memCluster) node(id string) *memNode { return &memNode{c: c, id: id} }

// nodeDown reports node down to every other node.
func (c *memCluster) nodeDown(node string) {
	c.mu.Lock()
	var fns []func(string)
	for id, fs := range c.downs {
		if id != node {
			fns = append(fns, fs...)
		}
	}
	delete(c.downs, node)
	c.mu.Unlock()
	for _, fn := range fns {
		fn(node)
	}
}

// status returns the user's status entry, decoded (ok false: none).
func (c *memCluster) status(user string) (shownValue, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.kv["s|"+user]
	if !ok {
		return shownValue{}, false
	}
	v, _ := decodeShown(e.val)
	return v, true
}

func (c *memCluster) offlineCount(user string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.deletes[user]
}

// setStatus writes under mu and tells the watchers.
func (c *memCluster) setStatus(user string, val []byte) uint64 {
	c.rev++
	if val == nil {
		delete(c.kv, "s|"+user)
	} else {
		c.kv["s|"+user] = memEntry{val: val, rev: c.rev}
	}
	for ch := range c.watchers {
		ch <- memEvent{user: user, val: val, rev: c.rev}
	}
	return c.rev
}

type memNode struct {
	c  *memCluster
	id string
}

func (n *memNode) NodeID() string { return n.id }

func (n *memNode) PutConn(_ context.Context, user string) error {
	n.c.mu.Lock()
	defer n.c.mu.Unlock()
	n.c.rev++
	n.c.kv["c|"+user+"|"+n.id] = memEntry{val: []byte(n.id), rev: n.c.rev}
	return nil
}

func (n *memNode) DeleteConn(_ context.Context, user, node string) error {
	n.c.mu.Lock()
	defer n.c.mu.Unlock()
	delete(n.c.kv, "c|"+user+"|"+node)
	return nil
}

func (n *memNode) HasConns(_ context.Context, user string) (bool, error) {
	n.c.mu.Lock()
	defer n.c.mu.Unlock()
	for k := range n.c.kv {
		if strings.HasPrefix(k, "c|"+user+"|") {
			return true, nil
		}
	}
	return false, nil
}

func (n *memNode) ConnUsers(_ context.Context, node string) ([]string, error) {
	n.c.mu.Lock()
	defer n.c.mu.Unlock()
	var out []string
	for k := range n.c.kv {
		if p := strings.Split(k, "|"); p[0] == "c" && p[2] == node {
			out = append(out, p[1])
		}
	}
	return out, nil
}

func (n *memNode) GetStatus(_ context.Context, user string) ([]byte, uint64, error) {
	n.c.mu.Lock()
	defer n.c.mu.Unlock()
	e, ok := n.c.kv["s|"+user]
	if !ok {
		return nil, 0, nil
	}
	return e.val, e.rev, nil
}

func (n *memNode) CreateStatus(_ context.Context, user string, value []byte) (uint64, bool, error) {
	n.c.mu.Lock()
	defer n.c.mu.Unlock()
	if _, ok := n.c.kv["s|"+user]; ok {
		return 0, false, nil
	}
	return n.c.setStatus(user, value), true, nil
}

func (n *memNode) UpdateStatus(_ context.Context, user string, value []byte, rev uint64) (uint64, bool, error) {
	n.c.mu.Lock()
	defer n.c.mu.Unlock()
	if e, ok := n.c.kv["s|"+user]; !ok || e.rev != rev {
		return 0, false, nil
	}
	return n.c.setStatus(user, value), true, nil
}

func (n *memNode) DeleteStatus(_ context.Context, user string, rev uint64) (bool, error) {
	n.c.mu.Lock()
	defer n.c.mu.Unlock()
	if e, ok := n.c.kv["s|"+user]; !ok || e.rev != rev {
		return false, nil
	}
	n.c.setStatus(user, nil)
	n.c.deletes[user]++
	return true, nil
}

func (n *memNode) WatchStatus(ctx context.Context, fn func(string, []byte, uint64)) error {
	ch := make(chan memEvent, 1<<14)
	n.c.mu.Lock()
	var initial []memEvent
	for k, e := range n.c.kv {
		if u, ok := strings.CutPrefix(k, "s|"); ok {
			initial = append(initial, memEvent{user: u, val: e.val, rev: e.rev})
		}
	}
	n.c.watchers[ch] = struct{}{}
	n.c.mu.Unlock()
	defer func() {
		n.c.mu.Lock()
		delete(n.c.watchers, ch)
		n.c.mu.Unlock()
	}()
	sort.Slice(initial, func(i, j int) bool { return initial[i].rev < initial[j].rev })
	for _, e := range initial {
		fn(e.user, e.val, e.rev)
	}
	fn("", nil, 0)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e := <-ch:
			fn(e.user, e.val, e.rev)
		}
	}
}

func (n *memNode) PublishTyping(msg []byte) {
	n.c.mu.Lock()
	defer n.c.mu.Unlock()
	for ch := range n.c.typers {
		ch <- msg
	}
}

func (n *memNode) SubscribeTyping(ctx context.Context, fn func([]byte)) error {
	ch := make(chan []byte, 1<<14)
	n.c.mu.Lock()
	n.c.typers[ch] = struct{}{}
	n.c.mu.Unlock()
	defer func() {
		n.c.mu.Lock()
		delete(n.c.typers, ch)
		n.c.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m := <-ch:
			fn(m)
		}
	}
}

func (n *memNode) OnNodeDown(fn func(string)) {
	n.c.mu.Lock()
	defer n.c.mu.Unlock()
	n.c.downs[n.id] = append(n.c.downs[n.id], fn)
}

// ------------------------------------------------------------ test nodes --

// meshBroker is the Broker of every node: a delivery reaches every live
// node's hub (as the per-user subjects do).
type meshBroker struct {
	mu   sync.Mutex
	hubs map[*hub.Hub]bool
}

func (b *meshBroker) each(fn func(*hub.Hub)) {
	b.mu.Lock()
	var hs []*hub.Hub
	for h, alive := range b.hubs {
		if alive {
			hs = append(hs, h)
		}
	}
	b.mu.Unlock()
	for _, h := range hs {
		fn(h)
	}
}

func (b *meshBroker) ToUsers(users []string, frame []byte, except string) {
	b.each(func(h *hub.Hub) { h.SendToUsers(users, frame, except) })
}
func (b *meshBroker) ToAll(frame []byte, except string) {
	b.each(func(h *hub.Hub) { h.SendAll(frame, except) })
}
func (b *meshBroker) Close() error { return nil }

// recConn is a connection (hub.Conn and gateway.Session) that records the
// frames it is sent.
type recConn struct {
	id, user string
	mu       sync.Mutex
	frames   []protocol.Envelope
}

func (c *recConn) ID() string     { return c.id }
func (c *recConn) UserID() string { return c.user }
func (c *recConn) Send(frame []byte) bool {
	var env protocol.Envelope
	_ = json.Unmarshal(frame, &env)
	c.mu.Lock()
	c.frames = append(c.frames, env)
	c.mu.Unlock()
	return true
}
func (c *recConn) Name() string                       { return "" }
func (c *recConn) Claims() *auth.Claims               { return &auth.Claims{UserID: c.user} }
func (c *recConn) Done() <-chan struct{}              { return nil }
func (c *recConn) ReplyError(string, *protocol.Error) {}
func (c *recConn) Reply(typ, id string, _ any)        {}
func (c *recConn) presenceOf(user string) (out []string) {
	return c.about(protocol.TypePresenceUpdate, user)
}

// about returns, for frames of type typ about user, the presence value
// (presence:update) or the room (typing:*).
func (c *recConn) about(typ, user string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, f := range c.frames {
		if f.Type != typ {
			continue
		}
		var d struct {
			UserID   string `json:"user_id"`
			Presence string `json:"presence"`
			RoomID   string `json:"room_id"`
		}
		_ = json.Unmarshal(f.Data, &d)
		if d.UserID == user {
			out = append(out, d.Presence+d.RoomID)
		}
	}
	return out
}

type testNode struct {
	id  string
	hub *hub.Hub
	svc *Service
}

type testCluster struct {
	t      *testing.T
	mem    *memCluster
	broker *meshBroker
	nodes  map[string]*testNode
}

func newTestCluster(t *testing.T, st Store, grace time.Duration, ids ...string) *testCluster {
	return newTestClusterTyping(t, st, grace, time.Hour, ids...)
}

// newTestClusterTyping is newTestCluster with a typing timeout.
func newTestClusterTyping(t *testing.T, st Store, grace, typing time.Duration, ids ...string) *testCluster {
	tc := &testCluster{t: t, mem: newMemCluster(), broker: &meshBroker{hubs: map[*hub.Hub]bool{}}, nodes: map[string]*testNode{}}
	for _, id := range ids {
		h := hub.New()
		svc := New(Options{Store: st, Broker: tc.broker, Hub: h, Cluster: tc.mem.node(id),
			TypingTimeout: typing, PresenceOfflineGrace: grace,
			Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		svc.Start()
		t.Cleanup(svc.Close)
		tc.broker.mu.Lock()
		tc.broker.hubs[h] = true
		tc.broker.mu.Unlock()
		tc.nodes[id] = &testNode{id: id, hub: h, svc: svc}
	}
	eventually(t, 5*time.Second, "every typing subscription running", func() bool {
		tc.mem.mu.Lock()
		defer tc.mem.mu.Unlock()
		return len(tc.mem.typers) == len(ids)
	})
	for _, n := range tc.nodes { // every watch running
		select {
		case <-n.svc.cl.ready:
		case <-time.After(5 * time.Second):
			t.Fatal("watch not ready")
		}
	}
	return tc
}

func (tc *testCluster) connect(node, connID, user string) *recConn {
	c := &recConn{id: connID, user: user}
	n := tc.nodes[node]
	first := n.hub.Add(c)
	n.svc.Connected(c, first)
	return c
}

func (tc *testCluster) disconnect(node string, c *recConn) {
	n := tc.nodes[node]
	last := n.hub.Remove(c)
	n.svc.Disconnected(c, last)
}

// kill stops a node the way kill -9 does (nothing of it runs, its entries
// stay), then the others are told it is down.
func (tc *testCluster) kill(node string) {
	n := tc.nodes[node]
	tc.broker.mu.Lock()
	tc.broker.hubs[n.hub] = false
	tc.broker.mu.Unlock()
	n.svc.Close()
	delete(tc.nodes, node)
	tc.mem.nodeDown(node)
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// settled waits until the user's status entry is in state (or gone, for
// "") and no grace is pending on any node.
func (tc *testCluster) settled(user, state string) {
	tc.t.Helper()
	eventually(tc.t, 10*time.Second, user+" settled "+state, func() bool {
		v, ok := tc.mem.status(user)
		if (state == "") == ok || (ok && v.State != state) {
			return false
		}
		for _, n := range tc.nodes {
			if n.svc.pres.grace.Has(user) {
				return false
			}
		}
		return true
	})
}

func (tc *testCluster) statusesAgree(viewer, user, want string) {
	tc.t.Helper()
	eventually(tc.t, 5*time.Second, "every node shows "+user+" as "+want+" to "+viewer, func() bool {
		for _, n := range tc.nodes {
			if got := n.svc.Statuses(context.Background(), viewer, []string{user}); got[0].Presence != want {
				return false
			}
		}
		return true
	})
}

func joinStr(s []string) string { return strings.Join(s, ",") }

func presenceStore() *statusStore {
	return &statusStore{fakeStore: fakeStore{members: map[string][]string{"r": {"alice", "bob", "carol"}}}, statuses: map[string]string{}}
}

// ------------------------------------------------------------------ tests --

// TestClusterStatusTwoTabsTwoNodes: a user with a connection on n1 and one
// on n2 who closes one stays online for everyone (no offline, not even
// after the grace); closing the other makes them offline once, after the
// grace; every node answers Statuses the same.
func TestClusterStatusTwoTabsTwoNodes(t *testing.T) {
	tc := newTestCluster(t, presenceStore(), 100*time.Millisecond, "n1", "n2", "n3")
	bob := tc.connect("n3", "b1", "bob")
	a1 := tc.connect("n1", "a1", "alice")
	a2 := tc.connect("n2", "a2", "alice")
	tc.settled("alice", shownOnline)
	tc.statusesAgree("bob", "alice", StatusOnline)

	tc.disconnect("n1", a1)
	eventually(t, 5*time.Second, "grace started", func() bool { v, ok := tc.mem.status("alice"); return ok && v.State == shownGrace })
	tc.settled("alice", shownOnline) // the grace ended: n2 still has her
	tc.statusesAgree("bob", "alice", StatusOnline)
	if got := joinStr(bob.presenceOf("alice")); got != "online" {
		t.Fatalf("bob saw alice %q, want online only", got)
	}

	tc.disconnect("n2", a2)
	tc.settled("alice", "")
	tc.statusesAgree("bob", "alice", StatusOffline)
	eventually(t, 5*time.Second, "bob sees offline", func() bool { return joinStr(bob.presenceOf("alice")) == "online,offline" })
	if n := tc.mem.offlineCount("alice"); n != 1 {
		t.Fatalf("%d offline transitions, want 1", n)
	}
}

// TestClusterStatusInvisible: invisible set through n1 is offline to
// everyone on every node (frames and Statuses), invisible to the user's
// own connection on n2, and never sent to anyone else.
func TestClusterStatusInvisible(t *testing.T) {
	tc := newTestCluster(t, presenceStore(), 100*time.Millisecond, "n1", "n2", "n3")
	bob := tc.connect("n3", "b1", "alice-watcher-bob")
	_ = bob
	bob = tc.connect("n3", "b2", "bob")
	a1 := tc.connect("n1", "a1", "alice")
	a2 := tc.connect("n2", "a2", "alice")
	tc.settled("alice", shownOnline)
	data, _ := json.Marshal(map[string]string{"presence": StatusInvisible})
	if err := tc.nodes["n1"].svc.Handle(context.Background(), a1, protocol.Envelope{Type: protocol.TypePresenceUpdate, Data: data}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "a2 sees invisible", func() bool { return joinStr(a2.presenceOf("alice")) == "invisible" })
	eventually(t, 5*time.Second, "bob sees offline", func() bool { return joinStr(bob.presenceOf("alice")) == "online,offline" })
	tc.statusesAgree("bob", "alice", StatusOffline)
	tc.statusesAgree("", "alice", StatusOffline)
	tc.statusesAgree("alice", "alice", StatusInvisible)
	if got := a1.presenceOf("alice"); len(got) != 0 {
		t.Fatalf("the sender got %v (it has the ack)", got)
	}
	// A third tab on n3 and the first closing change nothing for bob.
	a3 := tc.connect("n3", "a3", "alice")
	tc.disconnect("n1", a1)
	tc.settled("alice", shownOnline)
	tc.disconnect("n2", a2)
	tc.disconnect("n3", a3)
	tc.settled("alice", "")
	for _, n := range tc.nodes {
		n.hub.Each(func(c hub.Conn) {
			rc := c.(*recConn)
			if rc.user == "alice" {
				return
			}
			for _, p := range rc.presenceOf("alice") {
				if p == StatusInvisible {
					t.Fatalf("%s was sent invisible", rc.user)
				}
			}
		})
	}
	if got := joinStr(bob.presenceOf("alice")); got != "online,offline" {
		t.Fatalf("bob saw alice %q", got)
	}
}

// TestClusterStatusMoveWithinGrace: closing the only connection on n1 and
// opening one on n2 within the grace sends nothing to others: no second
// online, no offline (not after the grace either).
func TestClusterStatusMoveWithinGrace(t *testing.T) {
	tc := newTestCluster(t, presenceStore(), 300*time.Millisecond, "n1", "n2", "n3")
	bob := tc.connect("n3", "b1", "bob")
	a1 := tc.connect("n1", "a1", "alice")
	tc.settled("alice", shownOnline)
	tc.disconnect("n1", a1)
	tc.connect("n2", "a2", "alice")
	tc.settled("alice", shownOnline)
	// Past the grace and the other nodes' slack: still nothing new.
	deadline := time.Now().Add(300*time.Millisecond + graceSlack + 200*time.Millisecond)
	eventually(t, 10*time.Second, "grace and slack passed", func() bool { return time.Now().After(deadline) })
	tc.settled("alice", shownOnline)
	if got := joinStr(bob.presenceOf("alice")); got != "online" {
		t.Fatalf("bob saw alice %q, want online only", got)
	}
	if n := tc.mem.offlineCount("alice"); n != 0 {
		t.Fatalf("%d offline transitions", n)
	}
}

// TestClusterStatusDeadNode: the users of a node that dies go offline
// after the grace, once (one transition, one frame per viewer), while a
// user with another connection elsewhere stays online; a grace that the
// dead node had started is finished by the others.
func TestClusterStatusDeadNode(t *testing.T) {
	tc := newTestCluster(t, presenceStore(), 200*time.Millisecond, "n1", "n2", "n3")
	bob := tc.connect("n2", "b1", "bob")
	carol := tc.connect("n3", "c1", "carol")
	tc.connect("n1", "a1", "alice")
	d1 := tc.connect("n1", "d1", "dave")
	tc.connect("n3", "d3", "dave")
	e1 := tc.connect("n1", "e1", "erin")
	tc.settled("alice", shownOnline)
	tc.settled("dave", shownOnline)
	tc.settled("erin", shownOnline)
	tc.disconnect("n1", e1) // erin's grace starts on n1, which then dies
	eventually(t, 5*time.Second, "erin in grace", func() bool { v, ok := tc.mem.status("erin"); return ok && v.State == shownGrace })
	_ = d1
	start := time.Now()
	tc.kill("n1")
	tc.settled("alice", "")
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Fatalf("offline after %v, before the grace", took)
	}
	tc.settled("erin", "")
	tc.settled("dave", shownOnline)
	for _, v := range []*recConn{bob, carol} {
		eventually(t, 5*time.Second, v.user+" sees alice offline", func() bool { return joinStr(v.presenceOf("alice")) == "online,offline" })
		eventually(t, 5*time.Second, v.user+" sees erin offline", func() bool { return joinStr(v.presenceOf("erin")) == "online,offline" })
		if got := joinStr(v.presenceOf("dave")); got != "online" {
			t.Fatalf("%s saw dave %q", v.user, got)
		}
	}
	for _, u := range []string{"alice", "erin"} {
		if n := tc.mem.offlineCount(u); n != 1 {
			t.Fatalf("%s: %d offline transitions, want 1", u, n)
		}
	}
	tc.statusesAgree("bob", "alice", StatusOffline)
	tc.statusesAgree("bob", "dave", StatusOnline)
}

// TestClusterTypingAcrossNodes: typing started through n2 is ended by a
// post through n1 (one typing:stop, sent by n2, whose timer is gone) and
// by a removal through n3; repeated starts are not re-broadcast.
func TestClusterTypingAcrossNodes(t *testing.T) {
	st := presenceStore()
	tc := newTestCluster(t, st, time.Second, "n1", "n2", "n3")
	ctx := context.Background()
	bob := tc.connect("n3", "b1", "bob")
	a2 := tc.connect("n2", "a2", "alice")
	c2 := tc.connect("n2", "c2", "carol")
	start := func(c *recConn, node string) {
		data, _ := json.Marshal(map[string]string{"room_id": "r"})
		if err := tc.nodes[node].svc.Handle(ctx, c, protocol.Envelope{Type: protocol.TypeTypingStart, Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	start(a2, "n2")
	start(a2, "n2")
	eventually(t, 5*time.Second, "n1 knows the remote typer", func() bool {
		tc.nodes["n1"].svc.typing.remoteMu.Lock()
		defer tc.nodes["n1"].svc.typing.remoteMu.Unlock()
		return tc.nodes["n1"].svc.typing.remoteNodes[typingKey{"r", "alice"}] == "n2"
	})
	tc.nodes["n1"].svc.endTyping(ctx, "r", "alice") // what PostMessage through n1 does
	eventually(t, 5*time.Second, "bob gets typing:stop", func() bool { return len(bob.about(protocol.TypeTypingStop, "alice")) == 1 })
	if n := tc.nodes["n2"].svc.TypingActive(); n != 0 {
		t.Fatalf("n2 still has %d typers", n)
	}
	if got := len(bob.about(protocol.TypeTypingStart, "alice")); got != 1 {
		t.Fatalf("bob got %d typing:start", got)
	}

	// Revocation: carol types through n2, is removed through n3.
	start(c2, "n2")
	eventually(t, 5*time.Second, "bob gets carol's typing:start", func() bool { return len(bob.about(protocol.TypeTypingStart, "carol")) == 1 })
	st.members["r"] = []string{"alice", "bob"}
	tc.nodes["n3"].svc.MembershipChanged(ctx, "r", "carol", true)
	eventually(t, 5*time.Second, "bob gets carol's typing:stop", func() bool { return len(bob.about(protocol.TypeTypingStop, "carol")) == 1 })
	eventually(t, 5*time.Second, "n2's typers gone", func() bool { return tc.nodes["n2"].svc.TypingActive() == 0 })
	if got := len(bob.about(protocol.TypeTypingStop, "alice")); got != 1 {
		t.Fatalf("bob got %d typing:stop of alice", got)
	}
}

// TestClusterTypingDeadNode: the typers of a node that dies get one
// typing:stop on each other member's connections, wherever they are.
func TestClusterTypingDeadNode(t *testing.T) {
	tc := newTestCluster(t, presenceStore(), time.Second, "n1", "n2", "n3")
	ctx := context.Background()
	bob := tc.connect("n2", "b2", "bob")
	bob3 := tc.connect("n3", "b3", "bob")
	carol := tc.connect("n3", "c3", "carol")
	a1 := tc.connect("n1", "a1", "alice")
	data, _ := json.Marshal(map[string]string{"room_id": "r"})
	if err := tc.nodes["n1"].svc.Handle(ctx, a1, protocol.Envelope{Type: protocol.TypeTypingStart, Data: data}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"n2", "n3"} {
		svc := tc.nodes[n].svc
		eventually(t, 5*time.Second, n+" knows the remote typer", func() bool {
			svc.typing.remoteMu.Lock()
			defer svc.typing.remoteMu.Unlock()
			return svc.typing.remoteNodes[typingKey{"r", "alice"}] == "n1"
		})
	}
	tc.kill("n1")
	for _, c := range []*recConn{bob, bob3, carol} {
		eventually(t, 5*time.Second, c.id+" gets typing:stop", func() bool { return len(c.about(protocol.TypeTypingStop, "alice")) >= 1 })
	}
	tc.settled("alice", "")
	for _, c := range []*recConn{bob, bob3, carol} {
		if n := len(c.about(protocol.TypeTypingStop, "alice")); n != 1 {
			t.Fatalf("%s got %d typing:stop", c.id, n)
		}
	}
}

// A node killed while one of its users types is declared dead up to 15 s
// later: its typer must still get typing:stop then, even though the
// typing timeout (plus slack) passed on the survivors meanwhile (the
// review: no typing:stop with the default 6 s timeout and 10 s dead-after).
func TestClusterTypingNodeDeclaredDeadLate(t *testing.T) {
	const typing = 200 * time.Millisecond
	tc := newTestClusterTyping(t, presenceStore(), time.Second, typing, "n1", "n2")
	ctx := context.Background()
	bob := tc.connect("n2", "b2", "bob")
	a1 := tc.connect("n1", "a1", "alice")
	data, _ := json.Marshal(map[string]string{"room_id": "r"})
	if err := tc.nodes["n1"].svc.Handle(ctx, a1, protocol.Envelope{Type: protocol.TypeTypingStart, Data: data}); err != nil {
		t.Fatal(err)
	}
	svc2 := tc.nodes["n2"].svc
	eventually(t, 5*time.Second, "n2 knows the remote typer", func() bool {
		svc2.typing.remoteMu.Lock()
		defer svc2.typing.remoteMu.Unlock()
		return svc2.typing.remoteNodes[typingKey{"r", "alice"}] == "n1"
	})
	// n1 dies at once (its own timer never fires), but the others hear of
	// it only later, past the typing timeout and its slack.
	n1 := tc.nodes["n1"]
	tc.broker.mu.Lock()
	tc.broker.hubs[n1.hub] = false
	tc.broker.mu.Unlock()
	n1.svc.Close()
	delete(tc.nodes, "n1")
	deadline := time.Now().Add(typing + graceSlack + 500*time.Millisecond)
	eventually(t, 10*time.Second, "the typing timeout and its slack to pass", func() bool { return time.Now().After(deadline) })
	if n := len(bob.about(protocol.TypeTypingStop, "alice")); n != 0 {
		t.Fatalf("typing:stop before n1 was declared dead: %d", n)
	}
	tc.mem.nodeDown("n1")
	eventually(t, 5*time.Second, "typing:stop after n1 was declared dead", func() bool {
		return len(bob.about(protocol.TypeTypingStop, "alice")) == 1
	})
}
