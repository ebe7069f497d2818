package api

import (
	"testing"
	"time"
)

func TestLoginLimiterPerIPAndPerUsername(t *testing.T) {
	l := NewLoginLimiter(0.001, 2)
	// One username from many addresses: its own bucket runs out.
	if !l.Allow("10.0.0.1", "alice") || !l.Allow("10.0.0.2", "alice") {
		t.Fatal("first attempts refused")
	}
	if l.Allow("10.0.0.3", "alice") {
		t.Error("third attempt on one username from a fresh IP allowed")
	}
	// The refusal took nothing from 10.0.0.3's bucket.
	if !l.Allow("10.0.0.3", "bob") || !l.Allow("10.0.0.3", "carol") {
		t.Error("a fresh IP lost attempts to a refused one")
	}
	// One address, many usernames: the IP's bucket runs out.
	if l.Allow("10.0.0.3", "dave") {
		t.Error("third attempt from one IP allowed")
	}
	// dave's bucket was not charged by the refusal.
	if !l.Allow("10.0.0.4", "dave") || !l.Allow("10.0.0.5", "dave") {
		t.Error("a refused attempt charged the username's bucket")
	}
}

func TestLoginLimiterSweepDropsIdleBuckets(t *testing.T) {
	l := NewLoginLimiter(1000, 1)
	for _, u := range []string{"a", "b", "c"} {
		l.Allow("10.0.0.1", u)
	}
	l.mu.Lock()
	l.sweep(time.Now().Add(time.Second)) // by then every bucket is full again
	n := len(l.ips) + len(l.users)
	l.mu.Unlock()
	if n != 0 {
		t.Errorf("%d buckets left after a sweep of refilled ones", n)
	}
}
