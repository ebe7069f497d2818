package api

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/protocol"
)

// One IP guessing a username's password empties only that (IP, username)
// bucket: the same user from another IP still gets in. The username's own
// bucket (all IPs) is much larger and stops distributed guessing at its
// edge; the IP's bucket stops one address spraying many usernames.
func TestLoginLimiterKeysByIPAndUsername(t *testing.T) {
	l := NewLoginLimiter(0.001, 3).PerIP(0.001, 5).PerUsername(0.001, 6)
	for i := 0; i < 3; i++ {
		if !l.Allow("10.0.0.1", "victim") {
			t.Fatalf("attempt %d refused", i+1)
		}
	}
	if l.Allow("10.0.0.1", "victim") {
		t.Fatal("4th attempt from one IP on one username allowed (pair burst 3)")
	}
	if !l.Allow("10.0.0.2", "victim") {
		t.Fatal("the victim from another IP was locked out")
	}
	// Username bucket: 6 in all, 4 taken (the refusal took nothing).
	if !l.Allow("10.0.0.3", "victim") || !l.Allow("10.0.0.4", "victim") {
		t.Fatal("attempts 5 and 6 on the username refused")
	}
	if l.Allow("10.0.0.5", "victim") {
		t.Fatal("7th attempt on the username from a fresh IP allowed (user burst 6)")
	}
	// IP bucket: 10.0.0.1 has used 3 of 5 (and the refused 4th took none).
	if !l.Allow("10.0.0.1", "b") || !l.Allow("10.0.0.1", "c") {
		t.Fatal("IP's attempts 4 and 5 refused")
	}
	if l.Allow("10.0.0.1", "d") {
		t.Fatal("6th attempt from one IP allowed (ip burst 5)")
	}
	// The refusals charged neither d's username bucket nor its pair.
	for i := 0; i < 3; i++ {
		if !l.Allow("10.0.0.9", "d") {
			t.Fatalf("d from a fresh IP, attempt %d, refused", i+1)
		}
	}
}

func TestKeyLimiterAtAndPastBurst(t *testing.T) {
	k := NewKeyLimiter(0.001, 2)
	if !k.Allow("a") || !k.Allow("a") {
		t.Fatal("burst refused")
	}
	if k.Allow("a") {
		t.Fatal("past the burst allowed")
	}
	if !k.Allow("b") {
		t.Fatal("another key refused")
	}
}

// Idle buckets are evicted and the map never holds more than maxLimiterKeys.
func TestKeyLimiterBounded(t *testing.T) {
	k := NewKeyLimiter(1000, 1)
	for _, u := range []string{"a", "b", "c"} {
		k.Allow(u)
	}
	k.mu.Lock()
	k.sweep(time.Now().Add(time.Second)) // by then every bucket is full again
	n := len(k.m)
	k.mu.Unlock()
	if n != 0 {
		t.Errorf("%d buckets left after a sweep of refilled ones", n)
	}
	slow := NewKeyLimiter(0.0001, 1)
	for i := 0; i < maxLimiterKeys+10; i++ {
		slow.Allow(fmt.Sprint("k", i))
	}
	if n := slow.Len(); n > maxLimiterKeys {
		t.Fatalf("%d keys tracked, cap %d", n, maxLimiterKeys)
	}
}

func TestIPKey(t *testing.T) {
	for in, want := range map[string]string{
		"10.1.2.3": "10.1.2.3", "::ffff:10.1.2.3": "10.1.2.3",
		"2001:db8:1:2:3:4:5:6": "2001:db8:1:2::/64", "2001:db8:1:2:ffff::1": "2001:db8:1:2::/64",
		"not-an-ip": "not-an-ip",
	} {
		if got := IPKey(in); got != want {
			t.Errorf("IPKey(%q) = %q, want %q", in, got, want)
		}
	}
}

// At most n functions run at once; one that gets no slot within the wait
// is refused with rate_limited instead of queuing.
func TestHashGate(t *testing.T) {
	g := NewHashGate(2, 50*time.Millisecond)
	release := make(chan struct{})
	started := make(chan struct{}, 2)
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := g.Do(context.Background(), func() { started <- struct{}{}; <-release }); err != nil {
				t.Error(err)
			}
		}()
	}
	<-started
	<-started
	t0 := time.Now()
	err := g.Do(context.Background(), func() { t.Error("a third hash ran while two held the gate") })
	var pe *protocol.Error
	if !errors.As(err, &pe) || pe.Code != protocol.CodeRateLimited {
		t.Fatalf("third: %v, want rate_limited", err)
	}
	if d := time.Since(t0); d < 50*time.Millisecond {
		t.Fatalf("refused after %s, before the wait", d)
	}
	close(release)
	wg.Wait()
	ran := false
	if err := g.Do(context.Background(), func() { ran = true }); err != nil || !ran {
		t.Fatalf("after release: %v", err)
	}
}
