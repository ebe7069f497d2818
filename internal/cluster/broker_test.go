package cluster

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

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
	// From the first node to a connection on the last node.
	nodes[0].broker.ToConn(fmt.Sprintf("b-%d", last), []byte("1"))
	add("1", fmt.Sprintf("b-%d", last))
	wait("ToConn", want)
	// To every connection of user a, except one, sent from the last node.
	nodes[last].broker.ToUsers([]string{"a"}, []byte("2"), "a-0")
	for i := 1; i < len(nodes); i++ {
		add("2", fmt.Sprintf("a-%d", i))
	}
	wait("ToUsers", want)
	nodes[0].broker.ToAll([]byte("3"), "")
	for _, c := range conns {
		add("3", c.id)
	}
	wait("ToAll", want)
	nodes[0].broker.ToConn("nobody", []byte("4"))
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

func TestNATSBrokerTwoNodes(t *testing.T) {
	opts := &natsserver.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true}
	ns, err := natsserver.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(ns.Shutdown)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var nodes []node
	for i := 0; i < 2; i++ {
		h := hub.New()
		b, err := NewNATS(ns.ClientURL(), fmt.Sprintf("node%d", i), h, nil, log)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		nodes = append(nodes, node{h, b})
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
}

// A NATS server restart interrupts cross-node delivery; both brokers
// reconnect by themselves and delivery resumes (fault test; it stops by
// itself within its deadline).
func TestNATSBrokerSurvivesServerRestart(t *testing.T) {
	opts := &natsserver.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true}
	ns, err := natsserver.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats not ready")
	}
	port := ns.Addr().(*net.TCPAddr).Port
	url := ns.ClientURL()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h1, h2 := hub.New(), hub.New()
	b1, err := NewNATS(url, "n1", h1, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	defer b1.Close()
	b2, err := NewNATS(url, "n2", h2, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	target := &rec{id: "c", user: "u"}
	h2.Add(target)

	// deliveredWithin sends until the target (on node 2) gets one from node 1.
	deliveredWithin := func(what string, d time.Duration) {
		t.Helper()
		before := len(target.got())
		deadline := time.Now().Add(d)
		for len(target.got()) == before {
			if time.Now().After(deadline) {
				t.Fatalf("%s: nothing delivered within %s", what, d)
			}
			b1.ToUsers([]string{"u"}, []byte("x"), "")
			time.Sleep(20 * time.Millisecond)
		}
	}
	deliveredWithin("before the restart", 5*time.Second)

	ns.Shutdown()
	ns.WaitForShutdown()
	ns2, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns2.Start()
	if !ns2.ReadyForConnections(10 * time.Second) {
		t.Fatal("restarted nats not ready")
	}
	defer ns2.Shutdown()
	deliveredWithin("after the restart", 30*time.Second)
}
