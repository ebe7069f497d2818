package rooms

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/access"
	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/metrics"
	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/store"
)

// In-memory fakes of everything a Manager talks to: a store with fencing
// (fakeStore), a committer that writes into it in order (fakeCommitter), a
// cluster of nodes with leases, ordered node messages and room
// subscriptions (fakeNet), and sessions that record their frames
// (fakeSession). They let the rooms logic be tested without a network,
// database or gateway; the same behaviour is tested end to end by
// internal/rooms/wiretest (one node) and internal/clustertest (three
// processes).

// --- store ---

type fakeRoomDoc struct {
	epoch   uint64
	updates []store.DocUpdate
}

type fakeStore struct {
	mu    sync.Mutex
	rooms map[string]*fakeRoomDoc
	fail  error // when set, AppendUpdates fails with it
}

func newFakeStore() *fakeStore { return &fakeStore{rooms: map[string]*fakeRoomDoc{}} }

func (s *fakeStore) doc(room string) *fakeRoomDoc {
	d := s.rooms[room]
	if d == nil {
		d = &fakeRoomDoc{}
		s.rooms[room] = d
	}
	return d
}

func (s *fakeStore) LoadDocument(_ context.Context, room string) (store.Document, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return store.Document{Data: json.RawMessage(`{}`), Updates: slices.Clone(s.doc(room).updates)}, nil
}

func (s *fakeStore) UpdatesSince(_ context.Context, room string, since int64) ([]store.DocUpdate, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []store.DocUpdate
	for _, u := range s.doc(room).updates {
		if u.Version > since {
			out = append(out, u)
		}
	}
	return out, true, nil
}

func (s *fakeStore) Claim(_ context.Context, room string) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.doc(room)
	d.epoch++
	return d.epoch, nil
}

func (s *fakeStore) append(u store.DocUpdate) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	d := s.doc(u.RoomID)
	if u.Epoch < d.epoch {
		return store.ErrFenced
	}
	if int64(len(d.updates))+1 != u.Version {
		return fmt.Errorf("version %d after %d: %w", u.Version, len(d.updates), store.ErrConflict)
	}
	d.epoch = u.Epoch
	d.updates = append(d.updates, u)
	return nil
}

func (s *fakeStore) versions(room string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.doc(room).updates)
}

// fakeCommitter writes each update on its own goroutine, in submission
// order, and calls back in that order (like store.Committer).
type fakeCommitter struct {
	s    *fakeStore
	mu   sync.Mutex
	q    []func()
	wake chan struct{}
}

func newFakeCommitter(t *testing.T, s *fakeStore) *fakeCommitter {
	c := &fakeCommitter{s: s, wake: make(chan struct{}, 1)}
	done := make(chan struct{})
	stop := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c.mu.Lock()
			q := c.q
			c.q = nil
			c.mu.Unlock()
			for _, f := range q {
				f()
			}
			if len(q) > 0 {
				continue
			}
			select {
			case <-c.wake:
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	return c
}

func (c *fakeCommitter) Submit(u store.DocUpdate, done func(error)) {
	c.mu.Lock()
	c.q = append(c.q, func() { done(c.s.append(u)) })
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// --- access ---

// fakeAccess grants everything, except what denied lists per user.
type fakeAccess struct {
	mu     sync.Mutex
	denied map[string]access.Set
}

func (a *fakeAccess) GrantsOf(_ context.Context, sub access.Subject, _ string, want access.Set) (access.Set, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return want & (access.Read | access.Presence | access.Write) &^ a.denied[sub.UserID], nil
}

func (a *fakeAccess) deny(user string, s access.Set) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.denied == nil {
		a.denied = map[string]access.Set{}
	}
	a.denied[user] = s
}

// --- sessions ---

type frame struct {
	Type string          `json:"type"`
	ID   string          `json:"id"`
	Data json.RawMessage `json:"data"`
	Err  *protocol.Error `json:"error"`
}

type fakeSession struct {
	id, user string
	mu       sync.Mutex
	frames   []frame
	changed  chan struct{}
	claims   *auth.Claims // nil: no room grants in the token
}

func newSession(id, user string) *fakeSession {
	return &fakeSession{id: id, user: user, changed: make(chan struct{}, 1)}
}

func (s *fakeSession) ID() string     { return s.id }
func (s *fakeSession) UserID() string { return s.user }
func (s *fakeSession) Name() string   { return "" }
func (s *fakeSession) Claims() *auth.Claims {
	if s.claims != nil {
		return s.claims
	}
	return &auth.Claims{UserID: s.user}
}

func (s *fakeSession) Send(b []byte) bool {
	var f frame
	if err := json.Unmarshal(b, &f); err != nil {
		panic(fmt.Sprintf("session %s got invalid JSON %q: %v", s.id, b, err))
	}
	s.mu.Lock()
	s.frames = append(s.frames, f)
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
	return true
}

func (s *fakeSession) Reply(typ, id string, data any) { s.Send(protocol.Encode(typ, id, data)) }

func (s *fakeSession) ReplyError(id string, err *protocol.Error) {
	b, _ := json.Marshal(frame{Type: "error", ID: id, Err: err})
	s.Send(b)
}

// wait returns the first frame (at or after index *from) matching ok, and
// moves *from past it; it fails the test after 5 s.
func (s *fakeSession) wait(t *testing.T, from *int, what string, ok func(frame) bool) frame {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		s.mu.Lock()
		for i := *from; i < len(s.frames); i++ {
			if ok(s.frames[i]) {
				f := s.frames[i]
				*from = i + 1
				s.mu.Unlock()
				return f
			}
		}
		s.mu.Unlock()
		select {
		case <-s.changed:
		case <-deadline:
			s.mu.Lock()
			defer s.mu.Unlock()
			t.Fatalf("session %s: no %s within 5s; frames: %s", s.id, what, dump(s.frames))
		}
	}
}

func (s *fakeSession) all() []frame {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.frames)
}

func dump(fs []frame) string {
	b, _ := json.Marshal(fs)
	return string(b)
}

// unsolicited matches a frame of type typ that answers no request (no id).
func unsolicited(typ string) func(frame) bool {
	return func(f frame) bool { return f.Type == typ && f.ID == "" }
}

// isType matches a frame of type typ with the id, or with any id when id
// is "".
func isType(typ, id string) func(frame) bool {
	return func(f frame) bool { return f.Type == typ && (id == "" || f.ID == id) }
}

// --- cluster ---

type fakeLease struct {
	node string
	rev  uint64
}

// fakeNet is a cluster of fake nodes: one lease table with a revision
// counter (like a NATS KV bucket), and one ordered inbox per node.
type fakeNet struct {
	mu     sync.Mutex
	rev    uint64
	leases map[string]fakeLease
	nodes  map[string]*fakeNode
	sent   map[string]int // room events delivered per room (for interest checks)
	// drop, when set, is asked about every node message: true loses it
	// (core NATS is at most once).
	drop func(from, to string, msg nodeMsg) bool
}

func newFakeNet() *fakeNet {
	return &fakeNet{leases: map[string]fakeLease{}, nodes: map[string]*fakeNode{}, sent: map[string]int{}}
}

type fakeNode struct {
	net  *fakeNet
	id   string
	h    ClusterHandler
	subs map[string]bool // guarded by net.mu
	dead bool            // guarded by net.mu

	mu   sync.Mutex
	q    []func()
	wake chan struct{}
}

func (n *fakeNet) node(t *testing.T, id string) *fakeNode {
	fn := &fakeNode{net: n, id: id, subs: map[string]bool{}, wake: make(chan struct{}, 1)}
	n.mu.Lock()
	n.nodes[id] = fn
	n.mu.Unlock()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			fn.mu.Lock()
			q := fn.q
			fn.q = nil
			fn.mu.Unlock()
			for _, f := range q {
				f()
			}
			if len(q) > 0 {
				continue
			}
			select {
			case <-fn.wake:
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	return fn
}

func (fn *fakeNode) enqueue(f func()) {
	fn.mu.Lock()
	fn.q = append(fn.q, f)
	fn.mu.Unlock()
	select {
	case fn.wake <- struct{}{}:
	default:
	}
}

func (fn *fakeNode) NodeID() string { return fn.id }
func (fn *fakeNode) SetHandler(h ClusterHandler) {
	fn.net.mu.Lock()
	defer fn.net.mu.Unlock()
	fn.h = h
}

// handler is fn's handler, nil until SetHandler (messages to a node
// without one are lost, as with a node not yet subscribed).
func (fn *fakeNode) handler() ClusterHandler {
	fn.net.mu.Lock()
	defer fn.net.mu.Unlock()
	return fn.h
}

func (fn *fakeNode) Lease(_ context.Context, room string) (Lease, bool, error) {
	fn.net.mu.Lock()
	defer fn.net.mu.Unlock()
	l, ok := fn.net.leases[room]
	return Lease{Node: l.node, Epoch: l.rev}, ok, nil
}

func (fn *fakeNode) Acquire(_ context.Context, room string, prev *Lease) (Lease, error) {
	n := fn.net
	n.mu.Lock()
	defer n.mu.Unlock()
	if fn.dead {
		return Lease{}, fmt.Errorf("node %s is dead", fn.id)
	}
	cur, ok := n.leases[room]
	if (prev == nil && ok) || (prev != nil && (!ok || cur.rev != prev.Epoch)) {
		return Lease{}, ErrLeaseTaken
	}
	n.rev++
	n.leases[room] = fakeLease{node: fn.id, rev: n.rev}
	return Lease{Node: fn.id, Epoch: n.rev}, nil
}

func (fn *fakeNode) Release(_ context.Context, room string, l Lease) error {
	n := fn.net
	n.mu.Lock()
	defer n.mu.Unlock()
	if cur, ok := n.leases[room]; ok && cur.rev == l.Epoch {
		delete(n.leases, room)
	}
	return nil
}

func (fn *fakeNode) Alive(node string) bool {
	fn.net.mu.Lock()
	defer fn.net.mu.Unlock()
	o := fn.net.nodes[node]
	return o != nil && !o.dead
}

func (fn *fakeNode) SendNode(node string, msg []byte) error {
	n := fn.net
	n.mu.Lock()
	to := n.nodes[node]
	dead := to == nil || to.dead || fn.dead
	n.mu.Unlock()
	if dead {
		return nil // lost, like a publish nobody receives
	}
	n.mu.Lock()
	drop := n.drop
	n.mu.Unlock()
	if drop != nil {
		if dm, err := decodeNodeMsg(msg); err == nil && drop(fn.id, node, dm) {
			return nil
		}
	}
	msg = slices.Clone(msg)
	to.enqueue(func() {
		if h := to.handler(); h != nil {
			h.NodeMessage(msg)
		}
	})
	return nil
}

func (fn *fakeNode) PublishRoom(room string, msg []byte) error {
	n := fn.net
	n.mu.Lock()
	defer n.mu.Unlock()
	if fn.dead {
		return nil
	}
	msg = slices.Clone(msg)
	for _, to := range n.nodes {
		if to.subs[room] && !to.dead {
			n.sent[room]++
			h := to.h
			to.enqueue(func() {
				if h != nil {
					h.RoomMessage(room, msg)
				}
			})
		}
	}
	return nil
}

func (fn *fakeNode) SubscribeRoom(room string) error {
	fn.net.mu.Lock()
	defer fn.net.mu.Unlock()
	fn.subs[room] = true
	return nil
}

func (fn *fakeNode) UnsubscribeRoom(room string) error {
	fn.net.mu.Lock()
	defer fn.net.mu.Unlock()
	delete(fn.subs, room)
	return nil
}

// kill makes node id vanish (kill -9): nothing it sends arrives any more,
// and every other node is told it is down.
func (n *fakeNet) kill(id string) {
	n.mu.Lock()
	n.nodes[id].dead = true
	var others []*fakeNode
	for _, o := range n.nodes {
		if o.id != id && !o.dead {
			others = append(others, o)
		}
	}
	n.mu.Unlock()
	for _, o := range others {
		o.enqueue(func() {
			if h := o.handler(); h != nil {
				h.NodeDown(id)
			}
		})
	}
}

func (n *fakeNet) subscribers(room string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for id, o := range n.nodes {
		if o.subs[room] {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// --- managers ---

var testOptions = Options{PresenceMaxBytes: 4096, StorageMaxBytes: 1 << 20, StorageMaxOps: 100, StorageMaxDepth: 32,
	KeepUpdates: 100, SnapshotEvery: 1000}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newSingle returns a single-node manager over a fake store.
func newSingle(t *testing.T) (*Manager, *fakeStore, *fakeAccess) {
	st := newFakeStore()
	acc := &fakeAccess{}
	return NewManager(testOptions, st, newFakeCommitter(t, st), acc, metrics.New(nil), quietLog(), nil), st, acc
}

// testCluster is n managers on one fake network and one fake store.
type testCluster struct {
	net   *fakeNet
	store *fakeStore
	acc   *fakeAccess
	m     map[string]*Manager
}

func newTestCluster(t *testing.T, nodes ...string) *testCluster {
	tc := &testCluster{net: newFakeNet(), store: newFakeStore(), acc: &fakeAccess{}, m: map[string]*Manager{}}
	com := newFakeCommitter(t, tc.store)
	for _, id := range nodes {
		tc.m[id] = tc.newManager(t, id, com)
	}
	return tc
}

// testSyncTimeout is the resync answer timeout in these tests: short, so
// that a lost message is retried quickly.
const testSyncTimeout = 100 * time.Millisecond

// newManager starts a node id on the fake network (again, for a restart)
// with a manager configured before it receives anything.
func (tc *testCluster) newManager(t *testing.T, id string, com Committer) *Manager {
	fn := tc.net.node(t, id)
	m := NewManager(testOptions, tc.store, com, tc.acc, metrics.New(nil), quietLog(), nil)
	m.syncTimeout = testSyncTimeout
	m.cl = fn
	fn.SetHandler(m)
	return m
}

// send hands one client message to m as the gateway would, and turns a
// returned error into the error frame the gateway would send.
func send(t *testing.T, m *Manager, s Session, typ, id string, data any) {
	t.Helper()
	raw, err := json.Marshal(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Handle(context.Background(), s, protocol.Envelope{Type: typ, ID: id, Data: raw}); err != nil {
		perr, ok := err.(*protocol.Error)
		if !ok {
			perr = protocol.Errorf(protocol.CodeInternal, "%v", err)
		}
		s.ReplyError(id, perr)
	}
}
