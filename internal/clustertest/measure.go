package clustertest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// What the suite measures from outside the nodes: the embedded NATS
// server's own counters (it runs in the test process) and the room leases
// in JetStream. Nothing here reaches into a node.

// Server is the running embedded NATS server (nil while stopped).
func (n *NATS) Server() *natsserver.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv
}

// RoomSubject is the NATS subject of a room's events,
// <cluster>.room.<token> with token the room id in unpadded base64url
// (docs/cluster.md; internal/cluster's roomToken). Spelled out here so the
// suite stays black-box: if the encoding changed, the counts read on this
// subject would be zero and the tests that use it fail.
func RoomSubject(cluster, room string) string {
	return cluster + ".room." + base64.RawURLEncoding.EncodeToString([]byte(room))
}

// NodeConnName is the NATS connection name a node uses ("parley <cluster>
// <id>", internal/cluster), by which Counters finds its connection.
func NodeConnName(cluster, id string) string { return "parley " + cluster + " " + id }

// ConnCounters is one NATS client connection's counters.
type ConnCounters struct {
	Name    string
	Cid     uint64
	InMsgs  int64            // messages the connection published
	OutMsgs int64            // messages the server delivered to it
	Subs    map[string]int64 // subscription subject → messages delivered on it (summed when one subject has several subscriptions)
	NSubs   map[string]int   // subscription subject → number of subscriptions
}

// Counters is a snapshot of the embedded server's message counters.
type Counters struct {
	At      time.Time
	InMsgs  int64                   // Varz: messages received from every client (JetStream's internal clients included)
	OutMsgs int64                   // Varz: messages delivered to every client
	Conns   map[string]ConnCounters // client connections by name (unnamed ones by "cid <n>")
}

// Counters reads Varz and Connz (with every subscription's delivered
// count, SubDetail.Msgs: the server's per-subscription counter, bumped once
// per message it queues for that subscription).
func (n *NATS) Counters(t testing.TB) Counters {
	t.Helper()
	srv := n.Server()
	if srv == nil {
		t.Fatal("NATS is not running")
	}
	v, err := srv.Varz(nil)
	if err != nil {
		t.Fatalf("varz: %v", err)
	}
	cz, err := srv.Connz(&natsserver.ConnzOptions{SubscriptionsDetail: true, Limit: 100000})
	if err != nil {
		t.Fatalf("connz: %v", err)
	}
	out := Counters{At: time.Now(), InMsgs: v.InMsgs, OutMsgs: v.OutMsgs, Conns: map[string]ConnCounters{}}
	for _, ci := range cz.Conns {
		name := ci.Name
		if name == "" {
			name = fmt.Sprintf("cid %d", ci.Cid)
		}
		cc := ConnCounters{Name: name, Cid: ci.Cid, InMsgs: ci.InMsgs, OutMsgs: ci.OutMsgs, Subs: map[string]int64{}, NSubs: map[string]int{}}
		for _, sd := range ci.SubsDetail {
			cc.Subs[sd.Subject] += sd.Msgs
			cc.NSubs[sd.Subject]++
		}
		if old, dup := out.Conns[name]; dup {
			t.Fatalf("two NATS connections named %q (cids %d and %d)", name, old.Cid, ci.Cid)
		}
		out.Conns[name] = cc
	}
	return out
}

// Deliveries is, per node id, how many messages the server delivered to
// that node's subscription(s) on subject between a and b. A node without
// a subscription on subject in b is absent. It fails the test when a
// node's connection changed between the snapshots (a reconnect would
// reset its counters).
func (c *Cluster) Deliveries(t testing.TB, a, b Counters, subject string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, n := range c.Nodes {
		name := NodeConnName(c.Name, n.ID)
		cb, ok := b.Conns[name]
		if !ok {
			continue
		}
		if _, ok := cb.NSubs[subject]; !ok {
			continue
		}
		ca, ok := a.Conns[name]
		if ok && ca.Cid != cb.Cid {
			t.Fatalf("%s reconnected to NATS between two snapshots (cid %d → %d): its counters restarted", n.ID, ca.Cid, cb.Cid)
		}
		out[n.ID] = cb.Subs[subject] - ca.Subs[subject] // a missing subscription in a counts from 0
	}
	return out
}

// Subscribed returns the ids of the nodes with a subscription on subject
// in snapshot s, and the number of subscriptions each has.
func (c *Cluster) Subscribed(s Counters, subject string) map[string]int {
	out := map[string]int{}
	for _, n := range c.Nodes {
		if cc, ok := s.Conns[NodeConnName(c.Name, n.ID)]; ok && cc.NSubs[subject] > 0 {
			out[n.ID] = cc.NSubs[subject]
		}
	}
	return out
}

// ---------------------------------------------------------- monitor --

// Monitor is a plain NATS subscriber in the test process (connection name
// "clustertest monitor") that counts the messages published on subjects
// matching a wildcard: one delivery to it per publication, so its count of
// a subject is the number of publications on that subject.
type Monitor struct {
	nc     *nats.Conn
	mu     sync.Mutex
	counts map[string]int64
	change chan struct{}
}

// MonitorName is the Monitor's NATS connection name.
const MonitorName = "clustertest monitor"

// StartMonitor subscribes to wildcard (e.g. "<cluster>.room.>") until the
// test ends; the subscription is in place when it returns.
func (n *NATS) StartMonitor(t testing.TB, wildcard string) *Monitor {
	t.Helper()
	nc, err := nats.Connect(n.URL(), nats.Name(MonitorName))
	if err != nil {
		t.Fatalf("monitor: %v", err)
	}
	m := &Monitor{nc: nc, counts: map[string]int64{}, change: make(chan struct{})}
	if _, err := nc.Subscribe(wildcard, func(msg *nats.Msg) {
		m.mu.Lock()
		m.counts[msg.Subject]++
		close(m.change)
		m.change = make(chan struct{})
		m.mu.Unlock()
	}); err != nil {
		t.Fatalf("monitor: subscribe %s: %v", wildcard, err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("monitor: flush: %v", err)
	}
	t.Cleanup(nc.Close)
	return m
}

// Count is the number of messages seen on subject so far.
func (m *Monitor) Count(subject string) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.counts[subject]
}

// WaitCount waits until at least want messages were seen on subject and
// returns the count.
func (m *Monitor) WaitCount(subject string, want int64, within time.Duration) (int64, error) {
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		m.mu.Lock()
		got, ch := m.counts[subject], m.change
		m.mu.Unlock()
		if got >= want {
			return got, nil
		}
		select {
		case <-ch:
		case <-deadline.C:
			return got, fmt.Errorf("monitor: %d messages on %s within %v, want %d", got, subject, within, want)
		}
	}
}

// ----------------------------------------------------------- leases --

// RoomOwner reads the room's lease from the <cluster>_rooms KV bucket
// (docs/cluster.md: key = the room id in unpadded base64url, value
// {"node": id}, revision = epoch); ok is false when nobody holds it.
func (c *Cluster) RoomOwner(t testing.TB, room string) (node string, epoch uint64, ok bool) {
	t.Helper()
	nc, err := nats.Connect(c.NATS.URL(), nats.Name("clustertest lease reader"))
	if err != nil {
		t.Fatalf("lease reader: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("lease reader: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, c.Name+"_rooms")
	if err != nil {
		t.Fatalf("lease reader: bucket %s_rooms: %v", c.Name, err)
	}
	e, err := kv.Get(ctx, base64.RawURLEncoding.EncodeToString([]byte(room)))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return "", 0, false
	}
	if err != nil {
		t.Fatalf("lease of %s: %v", room, err)
	}
	var v struct {
		Node string `json:"node"`
	}
	if err := json.Unmarshal(e.Value(), &v); err != nil || v.Node == "" {
		t.Fatalf("lease of %s: malformed value %q", room, e.Value())
	}
	return v.Node, e.Revision(), true
}

// ------------------------------------------------------------ nodes --

// PID is the node's current process id (0 when not running).
func (n *Node) PID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.cmd.Process == nil {
		return 0
	}
	select {
	case <-n.done:
		return 0
	default:
	}
	return n.cmd.Process.Pid
}

// connName is used in failure messages.
func connNames(s Counters) string {
	var names []string
	for k := range s.Conns {
		names = append(names, k)
	}
	return strings.Join(names, ", ")
}
