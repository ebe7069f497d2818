package hub

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

type fakeConn struct {
	id, user string
	got      atomic.Int64
	closed   atomic.Bool
}

func (f *fakeConn) ID() string     { return f.id }
func (f *fakeConn) UserID() string { return f.user }
func (f *fakeConn) Send([]byte) bool {
	if f.closed.Load() {
		return false
	}
	f.got.Add(1)
	return true
}

func TestAddRemoveFirstLast(t *testing.T) {
	h := New()
	a1, a2 := &fakeConn{id: "a1", user: "a"}, &fakeConn{id: "a2", user: "a"}
	if !h.Add(a1) || h.Add(a2) {
		t.Fatal("first flag wrong")
	}
	if h.Add(a1) {
		t.Fatal("duplicate add reported first")
	}
	if n, u := h.Counts(); n != 2 || u != 1 {
		t.Fatalf("counts %d %d", n, u)
	}
	if h.Remove(a1) || !h.Remove(a2) {
		t.Fatal("last flag wrong")
	}
	if h.Remove(a2) {
		t.Fatal("removing twice reported last")
	}
	if n, u := h.Counts(); n != 0 || u != 0 || h.UserOnline("a") {
		t.Fatalf("counts %d %d", n, u)
	}
}

func TestTargets(t *testing.T) {
	h := New()
	conns := map[string]*fakeConn{}
	for _, id := range []string{"a1", "a2", "a3", "b1", "c1"} {
		c := &fakeConn{id: id, user: id[:1]}
		conns[id] = c
		h.Add(c)
	}
	check := func(want map[string]int64) {
		t.Helper()
		for id, c := range conns {
			if c.got.Load() != want[id] {
				t.Fatalf("%s got %d, want %d", id, c.got.Load(), want[id])
			}
		}
	}
	if n := h.SendToUser("a", nil, ""); n != 3 {
		t.Fatalf("SendToUser = %d", n)
	}
	check(map[string]int64{"a1": 1, "a2": 1, "a3": 1})
	h.SendToConn("b1", nil)
	check(map[string]int64{"a1": 1, "a2": 1, "a3": 1, "b1": 1})
	if n := h.SendToUsers([]string{"a", "b", "a", "nobody"}, nil, "a2"); n != 3 {
		t.Fatalf("SendToUsers = %d", n)
	}
	check(map[string]int64{"a1": 2, "a2": 1, "a3": 2, "b1": 2})
	if n := h.SendAll(nil, "c1"); n != 4 {
		t.Fatalf("SendAll = %d", n)
	}
	check(map[string]int64{"a1": 3, "a2": 2, "a3": 3, "b1": 3})
	conns["a3"].closed.Store(true)
	if n := h.SendToUser("a", nil, ""); n != 2 {
		t.Fatalf("closed conn counted: %d", n)
	}
	if h.SendToConn("zzz", nil) {
		t.Fatal("unknown conn accepted")
	}
}

// Many goroutines connecting, sending and disconnecting at once: run with
// -race. Every user's first/last transitions must pair up exactly.
func TestConcurrentRegistration(t *testing.T) {
	h := New()
	const workers, users, rounds = 16, 8, 300
	var firsts, lasts atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				c := &fakeConn{id: fmt.Sprintf("c%d-%d", w, r), user: fmt.Sprintf("u%d", (w+r)%users)}
				if h.Add(c) {
					firsts.Add(1)
				}
				h.SendToUser(c.user, nil, "")
				h.SendAll(nil, c.id)
				_ = h.ConnsOfUser(c.user)
				if h.Remove(c) {
					lasts.Add(1)
				}
			}
		}(w)
	}
	wg.Wait()
	if n, u := h.Counts(); n != 0 || u != 0 {
		t.Fatalf("after churn: %d conns %d users", n, u)
	}
	if firsts.Load() != lasts.Load() || firsts.Load() == 0 {
		t.Fatalf("first %d != last %d", firsts.Load(), lasts.Load())
	}
}

func BenchmarkSendToUsers100(b *testing.B) {
	h := New()
	var ids []string
	for i := 0; i < 100; i++ {
		c := &fakeConn{id: fmt.Sprint("c", i), user: fmt.Sprint("u", i)}
		h.Add(c)
		ids = append(ids, c.user)
	}
	frame := []byte(`{"type":"x"}`)
	b.ReportAllocs()
	for b.Loop() {
		h.SendToUsers(ids, frame, "")
	}
}

// Reserve never admits more than the node or per-user cap, even when many
// goroutines race for slots, and Release gives slots back exactly.
func TestReserveCaps(t *testing.T) {
	h := New()
	var wg sync.WaitGroup
	var admitted, nodeFull, userFull atomic.Int64
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch h.Reserve([]string{"a", "b", "c"}[i%3], 10, 4) {
			case Admitted:
				admitted.Add(1)
			case NodeFull:
				nodeFull.Add(1)
			case UserFull:
				userFull.Add(1)
			}
		}()
	}
	wg.Wait()
	if admitted.Load() != 10 {
		t.Fatalf("admitted %d, want 10", admitted.Load())
	}
	for _, u := range []string{"a", "b", "c"} {
		if _, n := h.Reserved(u); n > 4 {
			t.Fatalf("user %s holds %d slots, cap 4", u, n)
		}
	}
	_, na := h.Reserved("a")
	for range na + 3 { // extra releases are no-ops
		h.Release("a")
	}
	if node, n := h.Reserved("a"); n != 0 || node != 10-na {
		t.Fatalf("after release: node %d user %d", node, n)
	}
	if h.Reserve("a", 0, 0) != Admitted {
		t.Fatal("no caps: refused")
	}
}

// OnUser hooks hear a user's first connection added and last removed, and
// nothing in between; they run outside the hub's locks (they may call it).
func TestOnUser(t *testing.T) {
	h := New()
	var mu sync.Mutex
	var events []string
	for _, tag := range []string{"1", "2"} {
		h.OnUser(func(user string, online bool) {
			now := h.UserOnline(user) // would deadlock under the hub's lock
			mu.Lock()
			events = append(events, fmt.Sprintf("%s:%s:%v:%v", tag, user, online, now))
			mu.Unlock()
		})
	}
	a1, a2 := &fakeConn{id: "a1", user: "a"}, &fakeConn{id: "a2", user: "a"}
	h.Add(a1)
	h.Add(a2)
	h.Add(a2) // duplicate: nothing
	h.Remove(a1)
	h.Remove(a2)
	h.Remove(a2) // unknown: nothing
	want := "[1:a:true:true 2:a:true:true 1:a:false:false 2:a:false:false]"
	if got := fmt.Sprint(events); got != want {
		t.Fatalf("events %s, want %s", got, want)
	}
}
