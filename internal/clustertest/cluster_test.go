package clustertest

import (
	"fmt"
	"net"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

// deadAfter is PROTOCOL §9's bound: a killed node's clients leave their
// rooms within 15 s.
const deadAfter = 15 * time.Second

// drainRetryWindow is how long after a SIGTERM writers on the other nodes
// may see `internal` (the hand-over); after it, none.
const drainRetryWindow = 3 * time.Second

func nodes3(c *Cluster) (*Node, *Node, *Node) { return c.Node("n1"), c.Node("n2"), c.Node("n3") }

// TestClusterSingleNodeSanity runs the scenarios of the cluster tests with
// every client on n1 of a three-node cluster, plus the harness's process
// controls. It must pass on a binary without cross-node rooms: it checks
// the harness and the assertions themselves.
func TestClusterSingleNodeSanity(t *testing.T) {
	t.Parallel()
	c := New(t, Options{})
	n1 := c.Node("n1")
	t.Run("membership", func(t *testing.T) { scenarioMembership(t, n1, n1, n1) })
	t.Run("presence", func(t *testing.T) { scenarioPresence(t, n1, n1, n1) })
	t.Run("broadcast", func(t *testing.T) { scenarioBroadcast(t, n1, n1, n1) })
	t.Run("storage-order", func(t *testing.T) { scenarioStorageOrder(t, c, []*Node{n1, n1, n1}, 100) })
	t.Run("catch-up", func(t *testing.T) { scenarioCatchUp(t, n1, n1) })
	t.Run("rest-storage", func(t *testing.T) { scenarioRESTStorage(t, n1, n1, n1) })
	t.Run("permission-change", func(t *testing.T) { scenarioPermissionChange(t, n1, n1, n1) })
	t.Run("nats-restart", func(t *testing.T) {
		c.NATS.Restart()
		for _, n := range c.Nodes {
			if _, err := n.PollHealthz(200, 30*time.Second); err != nil {
				t.Fatal(err)
			}
		}
		a := n1.Dial("A@n1", "alice", AllRooms)
		a.Join("after-nats", nil)
		if v := a.Patch("after-nats", `[{"op":"add","path":"/x","value":1}]`); v != 1 {
			t.Fatalf("write after NATS restart acknowledged at %d", v)
		}
	})
	t.Run("kill-9-and-restart", func(t *testing.T) {
		a := n1.Dial("A@n1", "alice", AllRooms)
		a.Join("durable", nil)
		for i := 1; i <= 3; i++ {
			a.Patch("durable", fmt.Sprintf(`[{"op":"add","path":"/k%d","value":%d}]`, i, i))
		}
		n1.Kill()
		if _, err := a.WaitClosed(soon); err != nil {
			t.Fatal(err)
		}
		if code, ok := n1.WaitExit(soon); !ok || code != -1 {
			t.Fatalf("n1 after kill -9: exit %d (%s)", code, n1.ExitStatus())
		}
		n1.Restart()
		if v, doc := n1.Storage("durable"); v != 3 || len(doc) != 3 {
			t.Fatalf("after kill -9 and restart: version %d %v", v, doc)
		}
	})
	t.Run("sigterm", func(t *testing.T) {
		a := n1.Dial("A@n1", "alice", AllRooms)
		a.Join("drain", nil)
		n1.Term()
		code, err := a.WaitClosed(soon)
		if err != nil || code != CloseGoingAway {
			t.Fatalf("close on SIGTERM: code %d, %v; want 1001", code, err)
		}
		if code, ok := n1.WaitExit(20 * time.Second); !ok || code != 0 {
			t.Fatalf("exit after SIGTERM: %d, exited %v (%s)", code, ok, n1.ExitStatus())
		}
		n1.Restart()
	})
}

// 1. Membership across nodes (PROTOCOL §3 room:join/leave, §9).
func TestClusterMembership(t *testing.T) {
	t.Parallel()
	c := New(t, Options{})
	n1, n2, n3 := nodes3(c)
	scenarioMembership(t, n1, n2, n3)
}

// 2. Presence across nodes.
func TestClusterPresence(t *testing.T) {
	t.Parallel()
	c := New(t, Options{})
	n1, n2, n3 := nodes3(c)
	scenarioPresence(t, n1, n2, n3)
}

// 3. Broadcast across nodes: room:event to the others, not the sender.
func TestClusterBroadcast(t *testing.T) {
	t.Parallel()
	c := New(t, Options{})
	n1, n2, n3 := nodes3(c)
	scenarioBroadcast(t, n1, n2, n3)
}

// 4. Storage order: 3 writers × 100 pipelined batches, one per node; one
// order, no gap, no `internal`, the same document on every node.
func TestClusterStorageOrder(t *testing.T) {
	t.Parallel()
	c := New(t, Options{})
	n1, n2, n3 := nodes3(c)
	scenarioStorageOrder(t, c, []*Node{n1, n2, n3}, 100)
}

// 5. Catch-up on another node: written on n1, since_version on n2.
func TestClusterCatchUp(t *testing.T) {
	t.Parallel()
	c := New(t, Options{})
	scenarioCatchUp(t, c.Node("n1"), c.Node("n2"))
}

// 6. REST storage through a node without clients of the room.
func TestClusterRESTStorage(t *testing.T) {
	t.Parallel()
	c := New(t, Options{})
	n1, n2, n3 := nodes3(c)
	scenarioRESTStorage(t, n1, n2, n3)
}

// 7. A member removed through another node leaves the room at once.
func TestClusterPermissionChange(t *testing.T) {
	t.Parallel()
	c := New(t, Options{})
	n1, n2, n3 := nodes3(c)
	scenarioPermissionChange(t, n1, n2, n3)
}

// failoverSetup: A joins first on n1 (so n1 owns the room), then B on n2
// and C on n3; a writer on each; every writer acknowledged a few times.
func failoverSetup(t *testing.T, c *Cluster, room string) (clients []*Client, ws []*writer) {
	t.Helper()
	for i, n := range c.Nodes[:3] {
		name := []string{"A", "B", "C"}[i]
		cl := n.Dial(label(name, n), strings.ToLower(name)+"-user", AllRooms)
		cl.Join(room, nil)
		clients = append(clients, cl)
	}
	for _, cl := range clients {
		ws = append(ws, startWriter(room, strings.ReplaceAll(cl.Label, "@", "_"), cl))
	}
	t.Cleanup(func() {
		for _, w := range ws {
			w.halt()
		}
	})
	waitWriters(t, 30*time.Second, "20 acknowledgements each before the fault", ws, func(w *writer) bool {
		acks, _ := w.snapshot()
		return len(acks) >= 20
	})
	for _, w := range ws {
		if _, errs := w.snapshot(); len(errs) > 0 {
			t.Fatalf("%s: refused before any fault: %s (first: %s)", w.label, summarizeErrs(errs), errs[0].msg)
		}
	}
	return clients, ws
}

// converge stops the writers, then requires the same version and document
// on every running node, every acknowledged batch in it, each client told
// that version, and a sound version stream for every client.
func converge(t *testing.T, c *Cluster, room string, ws []*writer, clients []*Client, all []*Client) {
	t.Helper()
	for _, w := range ws {
		w.halt()
	}
	var refV int64 = -1
	var refDoc map[string]any
	var ref string
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		v, doc := n.Storage(room)
		if refV >= 0 && (v != refV || !reflect.DeepEqual(doc, refDoc)) {
			t.Fatalf("nodes disagree: %s serves version %d (%d keys), %s version %d (%d keys)", ref, refV, len(refDoc), n.ID, v, len(doc))
		}
		refV, refDoc, ref = v, doc, n.ID
		checkAcked(t, "GET storage on "+n.ID, doc, ws...)
	}
	t.Logf("final: version %d, %d keys", refV, len(refDoc))
	for _, cl := range clients {
		if err := cl.WaitUntilE(soon, fmt.Sprintf("version %d", refV), func(fs []Frame) bool {
			for i := len(fs) - 1; i >= 0; i-- {
				if v := fs[i].Version(); v >= 0 {
					return v >= refV
				}
			}
			return false
		}); err != nil {
			t.Error(err)
		}
		if v := cl.LastVersion(); v > refV {
			t.Errorf("%s was told version %d, beyond the stored %d", cl.Label, v, refV)
		}
	}
	for _, cl := range all {
		if p := checkVersionStream(cl); len(p) > 0 {
			t.Errorf("%s: version stream:\n  %s", cl.Label, strings.Join(p, "\n  "))
		}
	}
}

// 8. kill -9 of the room's owner node in the middle of writes.
func TestClusterOwnerKilled(t *testing.T) {
	t.Parallel()
	c := New(t, Options{})
	n1, n2, _ := nodes3(c)
	room := "failover"
	clients, ws := failoverSetup(t, c, room)
	a, b, cc := clients[0], clients[1], clients[2]

	killedAt := time.Now()
	n1.Kill()
	if _, err := a.WaitClosed(soon); err != nil {
		t.Fatal(err)
	}
	ws[0].halt()

	// A's client reconnects to n2 from the last version it saw: it is never
	// told a version older than one it was acknowledged.
	since, ackedA := a.LastVersion(), ws[0].maxAck()
	a2 := n2.Dial("A'@n2", "a-user", AllRooms)
	st, err := a2.JoinE(room, map[string]any{"since_version": since})
	if err != nil {
		t.Fatal(err)
	}
	if st.Storage.Version < ackedA {
		t.Errorf("%s: rejoined at version %d, but A was acknowledged version %d by n1 before the kill", a2.Label, st.Storage.Version, ackedA)
	}
	if len(st.Storage.Updates) > 0 {
		var vs []int64
		for _, u := range st.Storage.Updates {
			vs = append(vs, u.Version)
		}
		if msg := checkSequence(vs, since+1, st.Storage.Version); msg != "" {
			t.Errorf("%s: catch-up from %d: %s", a2.Label, since, msg)
		}
	}
	wA2 := startWriter(room, "A2_n2", a2)
	ws = append(ws, wA2)

	// The survivors see A leave within 15 s of the kill.
	for _, x := range []*Client{b, cc} {
		f, err := x.WaitForE(time.Until(killedAt.Add(deadAfter)), "room:left for "+a.Label+" (killed with n1)", About(TypeLeft, a.ConnID))
		if err != nil {
			t.Error(err)
			continue
		}
		t.Logf("%s saw %s leave %v after the kill", x.Label, a.Label, f.At.Sub(killedAt).Round(time.Millisecond))
	}
	// Writes recover on every surviving node.
	waitWriters(t, 30*time.Second, "10 acknowledgements for batches sent after the kill", ws[1:], func(w *writer) bool {
		return w.acksSince(killedAt) >= 10
	})
	for _, w := range ws[1:] {
		if _, errs := w.snapshot(); len(errs) > 0 {
			t.Logf("%s: refused during the failover: %s", w.label, summarizeErrs(errs))
		}
	}
	converge(t, c, room, ws, []*Client{b, cc, a2}, []*Client{a, b, cc, a2})
}

// 9. SIGTERM of the owner's node: its clients get 1001, the others keep
// writing with no `internal` after a short hand-over, nothing acknowledged
// is lost.
func TestClusterDrain(t *testing.T) {
	t.Parallel()
	c := New(t, Options{})
	n1, _, _ := nodes3(c)
	room := "drain"
	clients, ws := failoverSetup(t, c, room)
	a, b, cc := clients[0], clients[1], clients[2]

	termAt := time.Now()
	n1.Term()
	code, err := a.WaitClosed(soon)
	if err != nil || code != CloseGoingAway {
		t.Fatalf("%s on SIGTERM of n1: close code %d (%v), want 1001", a.Label, code, err)
	}
	ws[0].halt()
	if code, ok := n1.WaitExit(20 * time.Second); !ok || code != 0 {
		t.Errorf("n1 after SIGTERM: exit code %d, exited %v (%s)", code, ok, n1.ExitStatus())
	}
	for _, x := range []*Client{b, cc} {
		if _, err := x.WaitForE(time.Until(termAt.Add(deadAfter)), "room:left for "+a.Label+" (drained with n1)", About(TypeLeft, a.ConnID)); err != nil {
			t.Error(err)
		}
	}
	waitWriters(t, 30*time.Second, "20 acknowledgements for batches sent after the SIGTERM", ws[1:], func(w *writer) bool {
		return w.acksSince(termAt) >= 20
	})
	for _, w := range ws[1:] {
		w.halt()
		acks, errs := w.snapshot()
		// Failover time: the longest wait for an acknowledgement around
		// the SIGTERM.
		var worst time.Duration
		prev := termAt
		for _, a := range acks {
			if a.at.After(termAt) {
				worst = max(worst, a.at.Sub(prev))
				prev = a.at
			}
		}
		t.Logf("%s: failover time (longest gap between acknowledgements after SIGTERM) %v; errors %s", w.label, worst.Round(time.Millisecond), summarizeErrs(errs))
		for _, e := range errs {
			if e.code == CodeInternal && e.at.After(termAt.Add(drainRetryWindow)) {
				t.Errorf("%s: `internal` %v after the SIGTERM (retry window %v): %s", w.label, e.at.Sub(termAt).Round(time.Millisecond), drainRetryWindow, e.msg)
				break
			}
			if e.code != CodeInternal {
				t.Errorf("%s: refused %v after the SIGTERM: %s", w.label, e.at.Sub(termAt).Round(time.Millisecond), e.msg)
				break
			}
		}
	}
	converge(t, c, room, ws, []*Client{b, cc}, []*Client{a, b, cc})
}

// 10. Restart of NATS: /healthz 503 while it is down, 200 after; rooms
// work again afterwards (a fresh room:state is fine where events were lost).
func TestClusterNATSRestart(t *testing.T) {
	t.Parallel()
	c := New(t, Options{})
	n1, n2, n3 := nodes3(c)
	room := "nats"
	a := n1.Dial("A@n1", "alice", AllRooms)
	b := n2.Dial("B@n2", "bob", AllRooms)
	a.Join(room, nil)
	if st := b.Join(room, nil); len(st.Members) != 2 {
		t.Errorf("before the restart: %s's room:state lists %d members, want 2 (A@n1, B@n2)", b.Label, len(st.Members))
	}

	c.NATS.Stop()
	for _, n := range c.Nodes {
		if took, err := n.PollHealthz(503, 10*time.Second); err != nil {
			t.Errorf("NATS down: %v", err)
		} else {
			t.Logf("%s: /healthz 503 %v after NATS stopped", n.ID, took.Round(time.Millisecond))
		}
	}
	c.NATS.Start()
	for _, n := range c.Nodes {
		if took, err := n.PollHealthz(200, 30*time.Second); err != nil {
			t.Fatalf("NATS back: %v", err)
		} else {
			t.Logf("%s: /healthz 200 %v after NATS restarted", n.ID, took.Round(time.Millisecond))
		}
	}

	// Membership: C joins on n3 and sees A and B; A and B learn of C by
	// room:joined or by a fresh room:state.
	cc := n3.Dial("C@n3", "carol", AllRooms)
	expectMembers(t, cc, cc.Join(room, nil), a, b, cc)
	for _, x := range []*Client{a, b} {
		x.WaitFor(soon, "room:joined (or a fresh room:state) showing "+cc.Label, func(f Frame) bool {
			if f.Type == TypeJoined && f.Field("client_id") == cc.ConnID {
				return true
			}
			return f.Type == TypeState && f.ID == "" && strings.Contains(string(f.Data), cc.ConnID)
		})
	}
	// Storage: a write on n1 reaches n2 and n3.
	v := a.Patch(room, `[{"op":"add","path":"/after","value":1}]`)
	for _, x := range []*Client{b, cc} {
		x.WaitFor(soon, fmt.Sprintf("version %d after the NATS restart", v), func(f Frame) bool {
			return (f.Type == TypeStorage || f.Type == TypeState) && f.Version() >= v
		})
	}
}

// 11. A second node with an id already in the cluster refuses to start.
func TestClusterDuplicateNodeID(t *testing.T) {
	t.Parallel()
	c := New(t, Options{})
	n1 := c.Node("n1")
	dup := c.AddNode("n1", nil)
	if err := dup.Start(); err != nil {
		t.Fatal(err)
	}
	code, exited := dup.WaitExit(15 * time.Second)
	if !exited {
		hc, _, _ := dup.Healthz()
		t.Fatalf("a second process with PARLEY_NODE_ID=n1 in cluster %s is still running 15 s after start (its /healthz: %d); it must refuse to start", c.Name, hc)
	}
	var out []string
	for _, l := range strings.Split(dup.Log(), "\n") {
		if !strings.HasPrefix(l, "==== clustertest:") {
			out = append(out, l)
		}
	}
	if code == 0 || !strings.Contains(strings.Join(out, "\n"), "n1") {
		t.Fatalf("duplicate n1: exit code %d, output:\n%s\nwant a non-zero exit and an error naming the id n1", code, strings.Join(out, "\n"))
	}
	// The first n1 keeps serving.
	if hc, body, err := n1.Healthz(); err != nil || hc != 200 {
		t.Fatalf("n1 after the duplicate: /healthz %d %s %v", hc, body, err)
	}
	a := n1.Dial("A@n1", "alice", AllRooms)
	a.Join("dup", nil)
	if v := a.Patch("dup", `[{"op":"add","path":"/x","value":1}]`); v != 1 {
		t.Fatalf("n1 after the duplicate: write acknowledged at %d", v)
	}
}

// 12. Two clusters (c1, c2) on one NATS, each with its own schema and the
// same node ids: room R of one never hears of room R of the other.
func TestClusterTwoNames(t *testing.T) {
	t.Parallel()
	nats := StartNATS(t)
	c1 := New(t, Options{Name: "c1", Nodes: []string{"n1", "n2"}, NATS: nats})
	c2 := New(t, Options{Name: "c2", Nodes: []string{"n1", "n2"}, NATS: nats})
	room := "R"
	type side struct {
		name    string
		x, z, y *Client // x and z on n1, y on n2
	}
	mk := func(c *Cluster) side {
		n1, n2 := c.Node("n1"), c.Node("n2")
		s := side{name: c.Name,
			x: n1.Dial("X@"+c.Name+".n1", c.Name+"-xavier", AllRooms),
			z: n1.Dial("Z@"+c.Name+".n1", c.Name+"-zoe", AllRooms),
			y: n2.Dial("Y@"+c.Name+".n2", c.Name+"-yara", AllRooms)}
		for _, cl := range []*Client{s.x, s.z, s.y} {
			cl.Join(room, nil)
		}
		return s
	}
	s1, s2 := mk(c1), mk(c2)
	for _, s := range []side{s1, s2} {
		if f := s.x.Call(TypeBroadcast, map[string]any{"room_id": room, "event": "from " + s.name}, soon); f.Type != TypeAck {
			t.Fatalf("%s: broadcast answered %s", s.x.Label, f)
		}
		if v := s.x.Patch(room, fmt.Sprintf(`[{"op":"add","path":"/%s","value":true}]`, s.name)); v != 1 {
			t.Fatalf("%s: first write of cluster %s acknowledged at version %d", s.x.Label, s.name, v)
		}
	}
	// Same node: delivered (the positive control).
	for _, s := range []side{s1, s2} {
		s.z.WaitFor(soon, "room:event from "+s.x.Label, About(TypeEvent, s.x.ConnID))
		s.z.WaitFor(soon, "version 1 from "+s.x.Label, About(TypeStorage, s.x.ConnID))
	}
	leaks := func() {
		t.Helper()
		for _, pair := range [][2]side{{s1, s2}, {s2, s1}} {
			mine, other := pair[0], pair[1]
			for _, cl := range []*Client{mine.x, mine.z, mine.y} {
				cl.Sync()
				for _, f := range cl.Frames() {
					d := string(f.Data)
					if strings.Contains(d, other.name+"-") || strings.Contains(d, other.x.ConnID) || strings.Contains(d, "from "+other.name) {
						t.Errorf("%s (cluster %s) received a frame of cluster %s: %s", cl.Label, mine.name, other.name, f)
						break
					}
				}
			}
		}
	}
	leaks()
	// Other node of the same cluster: delivered too.
	for _, s := range []side{s1, s2} {
		s.y.WaitFor(soon, "room:event from "+s.x.Label, About(TypeEvent, s.x.ConnID))
		s.y.WaitFor(soon, "version 1 from "+s.x.Label, About(TypeStorage, s.x.ConnID))
	}
	leaks()
	for _, s := range []struct {
		c    *Cluster
		name string
	}{{c1, "c1"}, {c2, "c2"}} {
		for _, n := range s.c.Nodes {
			v, doc := n.Storage(room)
			if v != 1 || len(doc) != 1 || doc[s.name] != true {
				t.Errorf("cluster %s, %s: storage of %s is version %d %v, want version 1 {%s: true}", s.name, n.ID, room, v, doc, s.name)
			}
		}
	}
}

// 13. /healthz answers 503 while a node cannot reach PostgreSQL (n1
// reaches it through a TCP proxy the test cuts), 200 once it can again.
func TestClusterHealthzPostgresDown(t *testing.T) {
	t.Parallel()
	base := PostgresURL(t)
	schemaURL := NewSchema(t, base)
	u, err := url.Parse(schemaURL)
	if err != nil || u.Host == "" || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Skipf("%s is not a postgres:// URL with a host: cannot put a proxy in front of it", PostgresEnv)
	}
	target := u.Host
	if _, _, err := net.SplitHostPort(target); err != nil {
		target = net.JoinHostPort(target, "5432")
	}
	proxy := NewProxy(t, target)
	u.Host = proxy.Addr()
	c := New(t, Options{Nodes: []string{}, PostgresURL: schemaURL})
	n1 := c.AddNode("n1", map[string]string{"PARLEY_POSTGRES_URL": u.String()})
	n2 := c.AddNode("n2", nil)
	c.StartAll(n1, n2)

	proxy.Cut()
	took, err := n1.PollHealthz(503, 15*time.Second)
	if err != nil {
		t.Fatalf("PostgreSQL cut: %v", err)
	}
	t.Logf("n1: /healthz 503 %v after PostgreSQL was cut", took.Round(time.Millisecond))
	if hc, body, err := n2.Healthz(); err != nil || hc != 200 {
		t.Errorf("n2 (direct to PostgreSQL): /healthz %d %s %v, want 200", hc, body, err)
	}
	proxy.Restore()
	if took, err = n1.PollHealthz(200, 30*time.Second); err != nil {
		t.Fatalf("PostgreSQL restored: %v", err)
	}
	t.Logf("n1: /healthz 200 %v after PostgreSQL was restored", took.Round(time.Millisecond))
	a := n1.Dial("A@n1", "alice", AllRooms)
	a.Join("pg", nil)
	if v := a.Patch("pg", `[{"op":"add","path":"/x","value":1}]`); v != 1 {
		t.Fatalf("write after PostgreSQL came back acknowledged at %d", v)
	}
}
