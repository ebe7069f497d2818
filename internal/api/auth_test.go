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

// fakeClock makes l's time a variable the test moves.
func fakeClock(l *LoginLimiter) *time.Time {
	now := time.Now()
	l.now = func() time.Time { return now }
	return &now
}

// try is one attempt with outcome fail (true) or success (false); it
// reports whether the attempt was admitted.
func try(l *LoginLimiter, ip, user string, fail bool) bool {
	a, ok := l.Begin(ip, user)
	if !ok {
		return false
	}
	defer a.Done()
	if fail {
		a.Fail()
	} else {
		a.Succeed()
	}
	return true
}

// The pair bucket bounds one address on one username; the IP bucket one
// address over many usernames; a refusal takes nothing from either.
func TestLoginLimiterPairAndIPBuckets(t *testing.T) {
	l := NewLoginLimiter(0.001, 3).PerIP(0.001, 5).PerUsername(0.001, 1000)
	fakeClock(l)
	for i := 0; i < 3; i++ {
		if !try(l, "10.0.0.1", "victim", true) {
			t.Fatalf("attempt %d refused", i+1)
		}
	}
	if try(l, "10.0.0.1", "victim", true) {
		t.Fatal("4th attempt from one IP on one username allowed (pair burst 3)")
	}
	if !try(l, "10.0.0.2", "victim", false) {
		t.Fatal("the victim from another IP was locked out")
	}
	// IP bucket: 10.0.0.1 has used 3 of 5 (the refused 4th took none).
	if !try(l, "10.0.0.1", "b", true) || !try(l, "10.0.0.1", "c", true) {
		t.Fatal("IP's attempts 4 and 5 refused")
	}
	if try(l, "10.0.0.1", "d", true) {
		t.Fatal("6th attempt from one IP allowed (ip burst 5)")
	}
	// The refusal charged neither d's username bucket nor its pair.
	for i := 0; i < 3; i++ {
		if !try(l, "10.0.0.9", "d", false) {
			t.Fatalf("d from a fresh IP, attempt %d, refused", i+1)
		}
	}
}

// The reported attack: many addresses keep failing on one username, so the
// username bucket is empty (in debt) all the time. The victim's clean
// address is admitted every time; a fresh address is admitted once; every
// attacker address is refused after its first failure.
func TestLoginLimiterNoLockoutFromOtherAddresses(t *testing.T) {
	l := NewLoginLimiter(0.2, 10).PerIP(1, 30).PerUsername(0.001, 5)
	clock := fakeClock(l)
	var attackers []string
	for i := 1; i <= 120; i++ {
		attackers = append(attackers, fmt.Sprintf("10.3.0.%d", i))
	}
	for round := 0; round < 5; round++ {
		for i, ip := range attackers {
			got := try(l, ip, "victim", true)
			if round == 0 && !got {
				t.Fatalf("attacker %d's first attempt refused", i)
			}
			if round > 0 && got {
				t.Fatalf("attacker %d's attempt in round %d admitted with the username bucket empty", i, round)
			}
		}
		if !try(l, "192.0.2.1", "victim", false) {
			t.Fatalf("round %d: the victim from their own address refused", round)
		}
		*clock = clock.Add(2500 * time.Millisecond)
	}
	if !try(l, "192.0.2.99", "victim", false) {
		t.Fatal("the victim from a fresh address refused")
	}
}

// An address with a failure is unclean: the username bucket applies to it
// until the failure window has passed or it succeeds once it is admitted.
// The victim who mistyped once is therefore refused while others keep the
// username bucket empty, for at most the failure window.
func TestLoginLimiterMistypeMakesPairUnclean(t *testing.T) {
	l := NewLoginLimiter(1, 10).PerIP(1, 30).PerUsername(0.001, 2)
	clock := fakeClock(l)
	for _, ip := range []string{"10.3.0.1", "10.3.0.2"} { // empty the username bucket
		try(l, ip, "victim", true)
	}
	if !try(l, "192.0.2.1", "victim", true) { // the typo: the pair was clean
		t.Fatal("clean pair refused")
	}
	if try(l, "192.0.2.1", "victim", false) {
		t.Fatal("unclean pair admitted with the username bucket empty")
	}
	*clock = clock.Add(LoginFailureWindow - time.Second)
	if try(l, "192.0.2.1", "victim", false) {
		t.Fatal("unclean pair admitted before the failure window passed")
	}
	*clock = clock.Add(time.Second)
	if !try(l, "192.0.2.1", "victim", false) {
		t.Fatal("pair still refused after the failure window")
	}
	// The success cleared the record: a new typo is one ungated failure again.
	if !try(l, "192.0.2.1", "victim", true) {
		t.Fatal("pair refused after a success")
	}
}

// A success clears the failure record and refills the pair bucket, so a
// user who mistyped and then got in is neither gated nor short of tokens.
func TestLoginLimiterSuccessClearsPair(t *testing.T) {
	l := NewLoginLimiter(0.001, 3).PerIP(1, 30).PerUsername(0.001, 1000)
	fakeClock(l)
	try(l, "192.0.2.1", "u", true)
	try(l, "192.0.2.1", "u", true)
	if !try(l, "192.0.2.1", "u", false) {
		t.Fatal("third attempt refused")
	}
	for i := 0; i < 3; i++ {
		if !try(l, "192.0.2.1", "u", true) {
			t.Fatalf("after the success, attempt %d refused (bucket not refilled)", i+1)
		}
	}
	l.user = NewKeyLimiter(0.001, 1)
	l.user.Allow("u") // empty
	if try(l, "192.0.2.1", "u", false) {
		t.Fatal("pair with failures since its success admitted on an empty username bucket")
	}
}

// Concurrent attempts from a fresh address get one ungated guess between
// them: an attempt in flight makes the pair unclean. Done without an
// outcome charges no failure.
func TestLoginLimiterInFlightIsUnclean(t *testing.T) {
	l := NewLoginLimiter(1, 10).PerIP(1, 30).PerUsername(0.001, 1)
	fakeClock(l)
	try(l, "10.3.0.1", "victim", true) // empties the username bucket
	a, ok := l.Begin("10.3.0.2", "victim")
	if !ok {
		t.Fatal("first attempt from a fresh address refused")
	}
	if _, ok := l.Begin("10.3.0.2", "victim"); ok {
		t.Fatal("second concurrent attempt admitted ungated")
	}
	a.Done() // e.g. the hashing gate was busy: no failure
	if !try(l, "10.3.0.2", "victim", false) {
		t.Fatal("pair unclean after an attempt that ended without outcome")
	}
	var nilLim *LoginLimiter
	if a, ok := nilLim.Begin("10.0.0.1", "x"); !ok || a != nil {
		t.Fatal("nil limiter refused")
	} else {
		a.Fail()
		a.Succeed()
		a.Done()
	}
}

// The pair map stays bounded: idle records (clean, bucket full) are swept;
// failure records live for the window and are then swept; a pair that
// cannot be tracked because the map is full is gated by the username
// bucket, never left ungated.
func TestLoginLimiterPairsBounded(t *testing.T) {
	l := NewLoginLimiter(1000, 1).PerIP(1000, 1000).PerUsername(0.001, 1)
	clock := fakeClock(l)
	l.maxPairs = 10
	for i := 0; i < 10; i++ {
		try(l, fmt.Sprint("10.0.0.", i), "u", false)
	}
	*clock = clock.Add(2 * time.Second) // buckets refilled, records clean
	if !try(l, "10.0.1.1", "u", true) { // a failure: the record stays
		t.Fatal("new pair refused")
	}
	if n := l.Pairs(); n != 1 {
		t.Fatalf("%d pair records after sweeping idle ones, want 1", n)
	}
	try(l, "10.0.1.1", "v", true) // empties v's username bucket
	for i := 0; l.Pairs() < 10; i++ {
		try(l, fmt.Sprint("10.0.2.", i), "v", true)
		*clock = clock.Add(time.Hour / 1000) // keeps v's bucket at most one token
		if i > 100 {
			t.Fatal("map never filled")
		}
	}
	*clock = clock.Add(2 * time.Second)
	if try(l, "10.0.3.1", "v", false) {
		t.Fatal("untracked pair (map full) admitted on an empty username bucket")
	}
	if n := l.Pairs(); n > 10 {
		t.Fatalf("%d pair records, cap 10", n)
	}
	if !try(l, "10.0.3.1", "w", false) {
		t.Fatal("untracked pair on a username without failures refused")
	}
	*clock = clock.Add(LoginFailureWindow + time.Minute)
	if !try(l, "10.0.3.1", "v", false) {
		t.Fatal("refused after the failure window")
	}
	if n := l.Pairs(); n != 1 {
		t.Fatalf("%d pair records after the window, want 1", n)
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
