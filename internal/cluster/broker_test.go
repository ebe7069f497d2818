package cluster

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/hub"
)

type rec struct {
	id, user string
	mu       sync.Mutex
	frames   []string
}

func (r *rec) ID() string     { return r.id }
func (r *rec) UserID() string { return r.user }
func (r *rec) Send(f []byte) bool {
	r.mu.Lock()
	r.frames = append(r.frames, string(f))
	r.mu.Unlock()
	return true
}
func (r *rec) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.frames...)
}

// node is one server's hub with its broker.
type node struct {
	hub    *hub.Hub
	broker Broker
}

// runBrokerSuite runs the same delivery tests against any set of nodes
// sharing one broker fabric (one node for Local, two for NATS).
func runBrokerSuite(t *testing.T, nodes []node) {
	// Connections spread over the nodes: user a has one connection per node.
	var conns []*rec
	for i, n := range nodes {
		for _, c := range []*rec{{id: fmt.Sprintf("a-%d", i), user: "a"}, {id: fmt.Sprintf("b-%d", i), user: "b"}} {
			n.hub.Add(c)
			conns = append(conns, c)
		}
	}
	byID := map[string]*rec{}
	for _, c := range conns {
		byID[c.id] = c
	}
	wait := func(what string, want map[string][]string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			ok := true
			for id, c := range byID {
				if fmt.Sprint(c.got()) != fmt.Sprint(want[id]) {
					ok = false
				}
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				for id, c := range byID {
					t.Logf("%s: got %v want %v", id, c.got(), want[id])
				}
				t.Fatalf("%s: deliveries differ", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	want := map[string][]string{}
	add := func(f string, ids ...string) {
		for _, id := range ids {
			want[id] = append(want[id], f)
		}
	}
	last := len(nodes) - 1
	// To every connection of user a, except one, sent from the last node.
	nodes[last].broker.ToUsers([]string{"a"}, []byte("2"), "a-0")
	for i := 1; i < len(nodes); i++ {
		add("2", fmt.Sprintf("a-%d", i))
	}
	wait("ToUsers", want)
	// Both users, one listed twice, from the first node.
	nodes[0].broker.ToUsers([]string{"b", "a", "b"}, []byte("2b"), "")
	for _, c := range conns {
		add("2b", c.id)
	}
	wait("ToUsers two users", want)
	nodes[0].broker.ToUsers([]string{"nobody", ""}, []byte("x"), "")
	nodes[0].broker.ToAll([]byte("3"), "")
	for _, c := range conns {
		add("3", c.id)
	}
	wait("ToAll", want)
	nodes[0].broker.ToAll([]byte("5"), fmt.Sprintf("b-%d", last))
	for _, c := range conns {
		if c.id != fmt.Sprintf("b-%d", last) {
			add("5", c.id)
		}
	}
	wait("ToAll except", want)
}

func TestLocalBroker(t *testing.T) {
	h := hub.New()
	runBrokerSuite(t, []node{{h, NewLocal(h)}})
}

// The same suite over two nodes of one cluster (embedded NATS).
func TestNATSBrokerTwoNodes(t *testing.T) {
	url := startEmbedded(t).url()
	cluster := newCluster(t, url)
	var nodes []node
	for i := 0; i < 2; i++ {
		h := hub.New()
		n, _ := join(t, url, cluster, fmt.Sprintf("node%d", i), func(o *Options) { o.Hub = h })
		nodes = append(nodes, node{h, n})
	}
	runBrokerSuite(t, nodes)
}

func TestDeliveryCodec(t *testing.T) {
	in := encodeDelivery(kindUsers, "n1", "except", []string{"u1", "", "ü"}, []byte(`{"type":"x"}`))
	d, err := decodeDelivery(in)
	if err != nil || d.kind != kindUsers || d.node != "n1" || d.id != "except" || fmt.Sprint(d.users) != "[u1  ü]" || string(d.frame) != `{"type":"x"}` {
		t.Fatalf("round trip: %+v %v", d, err)
	}
	for i := 0; i < len(in)-len(`{"type":"x"}`); i++ {
		if _, err := decodeDelivery(in[:i]); err == nil && i < 8 {
			t.Fatalf("truncated input of %d bytes accepted", i)
		}
	}
	for _, kind := range []byte{0, 1, 4, 0xff} {
		if _, err := decodeDelivery(encodeDelivery(kind, "n", "", nil, nil)); err == nil {
			t.Fatalf("unknown kind %d accepted", kind)
		}
	}
}
