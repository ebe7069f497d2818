package chat

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

func TestTimersExpireInDeadlineOrder(t *testing.T) {
	tm := NewTimers[int]()
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 5000
	deadlines := make(map[int]int, n)
	for k := range n {
		d := rng.IntN(10000)
		deadlines[k] = d
		if !tm.Set(k, at(d)) {
			t.Fatalf("Set(%d) on a new key reported not added", k)
		}
	}
	if tm.Len() != n {
		t.Fatalf("Len = %d, want %d", tm.Len(), n)
	}
	var got []int
	for ms := 0; ms <= 10000; ms += 250 {
		batch := tm.Expire(at(ms))
		for _, k := range batch {
			if deadlines[k] > ms {
				t.Fatalf("key %d (deadline %d) expired at %d", k, deadlines[k], ms)
			}
			if !tm.Settle(k) {
				t.Fatalf("Settle(%d) after expiry = false", k)
			}
		}
		got = append(got, batch...)
		// Everything left is due later.
		if next, ok := tm.Next(); ok && !next.After(at(ms)) {
			t.Fatalf("after Expire(%d) the earliest deadline is %v", ms, next)
		}
	}
	if len(got) != n || tm.Len() != 0 {
		t.Fatalf("expired %d keys, %d left; want %d and 0", len(got), tm.Len(), n)
	}
	if !slices.IsSortedFunc(got, func(a, b int) int { return deadlines[a] - deadlines[b] }) {
		t.Error("keys did not expire in deadline order")
	}
}

func TestTimersRenewDelete(t *testing.T) {
	tm := NewTimers[string]()
	tm.Set("a", at(100))
	tm.Set("b", at(200))
	tm.Set("c", at(300))
	if tm.Set("a", at(400)) {
		t.Error("renewing a held key reported added")
	}
	if !tm.Delete("b") || tm.Delete("b") {
		t.Error("Delete: want true then false")
	}
	if got := tm.Expire(at(350)); !slices.Equal(got, []string{"c"}) {
		t.Fatalf("Expire(350) = %v, want [c] (a renewed, b deleted)", got)
	}
	tm.Settle("c")
	if got := tm.Expire(at(400)); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("Expire(400) = %v, want [a]", got)
	}
	tm.Settle("a")
	if tm.Len() != 0 {
		t.Errorf("Len = %d after everything settled", tm.Len())
	}
}

// TestTimersRenewalOvertakesExpiry: a Set between Expire and Settle revives
// the key and Settle reports false, so no stop is sent for a key that was
// renewed just in time; a Delete in the window also wins.
func TestTimersRenewalOvertakesExpiry(t *testing.T) {
	tm := NewTimers[string]()
	tm.Set("k", at(10))
	if got := tm.Expire(at(10)); !slices.Equal(got, []string{"k"}) {
		t.Fatalf("Expire = %v", got)
	}
	if !tm.Has("k") {
		t.Fatal("an expired key is no longer held before Settle")
	}
	if tm.Set("k", at(50)) {
		t.Error("Set in the expiry window reported added")
	}
	if tm.Settle("k") {
		t.Error("Settle after a renewal = true")
	}
	if got := tm.Expire(at(49)); len(got) != 0 {
		t.Errorf("renewed key expired early: %v", got)
	}
	if got := tm.Expire(at(50)); !slices.Equal(got, []string{"k"}) {
		t.Fatalf("renewed key did not expire at its new deadline: %v", got)
	}
	if !tm.Delete("k") || tm.Settle("k") {
		t.Error("Delete in the expiry window must win over Settle")
	}
	if tm.Set("k", at(60)) != true {
		t.Error("Set after Delete must report added")
	}
}

func TestTimersRunFiresOnce(t *testing.T) {
	tm := NewTimers[string]()
	stop := make(chan struct{})
	var mu sync.Mutex
	fired := map[string]int{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		tm.Run(stop, func(k string) {
			if tm.Settle(k) {
				mu.Lock()
				fired[k]++
				mu.Unlock()
			}
		})
	}()
	now := time.Now()
	const n = 2000
	for i := range n {
		// Later keys first: each Set of an earlier deadline wakes Run.
		tm.Set(fmt.Sprint(i), now.Add(time.Duration(n-i)*50*time.Microsecond))
	}
	tm.Set("renewed", now.Add(20*time.Millisecond))
	tm.Set("deleted", now.Add(20*time.Millisecond))
	tm.Delete("deleted")
	tm.Set("renewed", now.Add(150*time.Millisecond))
	deadline := time.Now().Add(5 * time.Second)
	for tm.Len() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(fired) != n+1 {
		t.Fatalf("%d keys fired, want %d", len(fired), n+1)
	}
	for k, c := range fired {
		if c != 1 {
			t.Errorf("key %s fired %d times", k, c)
		}
	}
	if fired["deleted"] != 0 {
		t.Error("a deleted key fired")
	}
	if time.Since(now) < 150*time.Millisecond {
		t.Error("the renewed key fired before its renewed deadline")
	}
}

func BenchmarkTimersRenew(b *testing.B) {
	tm := NewTimers[int]()
	for k := range 10000 {
		tm.Set(k, at(k))
	}
	b.ResetTimer()
	for i := range b.N {
		tm.Set(i%10000, at(10000+i))
	}
}

type panicCount struct {
	mu sync.Mutex
	n  int
}

func (p *panicCount) Panic(string) { p.mu.Lock(); p.n++; p.mu.Unlock() }

// A callback that panics for one key is contained: the same Run goroutine
// goes on firing the other keys (before the fix one user's bad timer would
// have taken the node down).
func TestRunContainsPanickingCallback(t *testing.T) {
	tm := NewTimers[int]()
	now := time.Now()
	for k := range 3 {
		tm.Set(k, now.Add(-time.Millisecond))
	}
	var pc panicCount
	fired := make(chan int, 3)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tm.Run(stop, contained(nil, &pc, func(k int) {
			if k == 0 {
				panic("injected")
			}
			fired <- k
		}))
	}()
	got := map[int]bool{}
	deadline := time.After(5 * time.Second)
	for len(got) < 2 {
		select {
		case k := <-fired:
			got[k] = true
		case <-deadline:
			t.Fatalf("fired %v before the deadline; want keys 1 and 2", got)
		}
	}
	close(stop)
	<-done
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.n != 1 {
		t.Fatalf("panics counted %d, want 1", pc.n)
	}
}
