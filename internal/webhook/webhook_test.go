package webhook

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var secret = []byte("whsec-test-0123456789abcdef")

func TestSignVerify(t *testing.T) {
	body := []byte(`{"id":"x","event":"room.started","created_at":"2026-01-01T00:00:00.000Z","data":{"room_id":"r"}}`)
	now := time.Unix(1_800_000_000, 0)
	h := Sign(secret, now, body)
	if !strings.HasPrefix(h, "t=1800000000,v1=") || len(h) != len("t=1800000000,v1=")+64 {
		t.Fatalf("header %q", h)
	}
	if _, err := Verify(secret, h, body, 5*time.Minute, now.Add(4*time.Minute)); err != nil {
		t.Fatalf("verify: %v", err)
	}
	// A second v1 (secret rotation) and unknown keys are fine.
	if _, err := Verify(secret, "v0=zz,"+Sign([]byte("other-secret-0123456789"), now, body)[13:]+","+h, body, 0, now); err != nil {
		t.Fatalf("rotation: %v", err)
	}
	for _, tc := range []struct {
		name   string
		secret []byte
		header string
		body   []byte
		now    time.Time
		want   error
	}{
		{"other secret", []byte("another-secret-0123456"), h, body, now, ErrMismatch},
		{"changed body", secret, h, append([]byte(" "), body...), now, ErrMismatch},
		{"too old", secret, h, body, now.Add(6 * time.Minute), ErrExpired},
		{"from the future", secret, h, body, now.Add(-6 * time.Minute), ErrExpired},
		{"empty", secret, "", body, now, ErrMalformed},
		{"no v1", secret, "t=1800000000", body, now, ErrMalformed},
		{"no t", secret, h[strings.Index(h, "v1="):], body, now, ErrMalformed},
		{"short v1", secret, "t=1800000000,v1=abcd", body, now, ErrMalformed},
		{"bad t", secret, "t=-5," + h[strings.Index(h, "v1="):], body, now, ErrMalformed},
		{"two t", secret, "t=1," + h, body, now, ErrMalformed},
		{"not kv", secret, "garbage", body, now, ErrMalformed},
	} {
		if _, err := Verify(tc.secret, tc.header, tc.body, 5*time.Minute, tc.now); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
}

// counters records the Counters calls.
type counters struct{ sent, retried, failed, dropped atomic.Int64 }

func (c *counters) WebhookSent()    { c.sent.Add(1) }
func (c *counters) WebhookRetried() { c.retried.Add(1) }
func (c *counters) WebhookFailed()  { c.failed.Add(1) }
func (c *counters) WebhookDropped() { c.dropped.Add(1) }

// receiver is a real HTTP receiver on 127.0.0.1 that verifies every
// request and records the events; answer decides the status of each.
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	mu     sync.Mutex
	events []Event
	answer func(n int, ev Event) int
}

func newReceiver(t *testing.T, answer func(n int, ev Event) int) *receiver {
	r := &receiver{t: t, answer: answer}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		if _, err := Verify(secret, req.Header.Get(SignatureHeader), body, time.Minute, time.Now()); err != nil {
			t.Errorf("receiver: %v", err)
		}
		var ev Event
		if err := json.Unmarshal(body, &ev); err != nil {
			t.Errorf("receiver: body %q: %v", body, err)
		}
		r.mu.Lock()
		r.events = append(r.events, ev)
		n := len(r.events)
		r.mu.Unlock()
		w.WriteHeader(r.answer(n, ev))
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) got() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRedeliveredWithTheSameID(t *testing.T) {
	rec := newReceiver(t, func(n int, _ Event) int {
		if n == 1 {
			return 500
		}
		return 200
	})
	c := &counters{}
	s := New(Options{URLs: []string{rec.srv.URL}, Secret: secret, Counters: c, InitialInterval: 10 * time.Millisecond})
	s.Start()
	defer s.Close(t.Context())
	s.Emit(RoomStarted, map[string]string{"room_id": "r1"})
	waitFor(t, "the retry", func() bool { return c.sent.Load() == 1 })
	evs := rec.got()
	if len(evs) != 2 || evs[0].ID != evs[1].ID || evs[0].ID == "" || evs[1].Event != RoomStarted ||
		string(evs[1].Data) != `{"room_id":"r1"}` || evs[0].CreatedAt != evs[1].CreatedAt {
		t.Fatalf("events %+v", evs)
	}
	if c.retried.Load() != 1 || c.failed.Load() != 0 || c.dropped.Load() != 0 || s.QueueLen() != 0 {
		t.Fatalf("counters sent %d retried %d failed %d dropped %d queue %d", c.sent.Load(), c.retried.Load(),
			c.failed.Load(), c.dropped.Load(), s.QueueLen())
	}
}

func TestGivenUpAfterRetryFor(t *testing.T) {
	rec := newReceiver(t, func(int, Event) int { return 503 })
	c := &counters{}
	s := New(Options{URLs: []string{rec.srv.URL}, Secret: secret, Counters: c, RetryFor: 100 * time.Millisecond,
		InitialInterval: 10 * time.Millisecond, MaxInterval: 20 * time.Millisecond})
	s.Start()
	defer s.Close(t.Context())
	s.Emit(UserOnline, map[string]string{"user_id": "u"})
	waitFor(t, "the give-up", func() bool { return c.failed.Load() == 1 })
	if n := len(rec.got()); n < 3 || c.retried.Load() != int64(n-1) || s.QueueLen() != 0 {
		t.Fatalf("%d attempts, %d retried, queue %d", n, c.retried.Load(), s.QueueLen())
	}
}

// RetryFor counts from a delivery's first attempt, not from when it was
// queued: an event that waited behind a slow one longer than RetryFor
// still gets its retries (review finding: it was given up after one try).
func TestRetryForCountsFromTheFirstAttempt(t *testing.T) {
	slow := make(chan struct{})
	rec := newReceiver(t, func(n int, ev Event) int {
		switch {
		case ev.Event == RoomStarted:
			<-slow // holds the only worker while the second event waits
			return 200
		case n == 2:
			return 500 // the second event's first attempt fails
		}
		return 200
	})
	c := &counters{}
	s := New(Options{URLs: []string{rec.srv.URL}, Secret: secret, Counters: c, Concurrency: 1,
		RetryFor: 200 * time.Millisecond, InitialInterval: 10 * time.Millisecond, MaxInterval: 20 * time.Millisecond})
	s.Start()
	defer s.Close(t.Context())
	s.Emit(RoomStarted, map[string]string{"room_id": "r1"})
	waitFor(t, "the slow delivery in flight", func() bool { return len(rec.got()) == 1 })
	s.Emit(UserOnline, map[string]string{"user_id": "u"})
	start := time.Now()
	for time.Since(start) < 300*time.Millisecond { // longer than RetryFor in the queue
		time.Sleep(10 * time.Millisecond)
	}
	close(slow)
	waitFor(t, "both delivered", func() bool { return c.sent.Load() == 2 || c.failed.Load() > 0 })
	if c.failed.Load() != 0 || c.retried.Load() != 1 {
		t.Fatalf("sent %d retried %d failed %d: the queued event was given up", c.sent.Load(), c.retried.Load(), c.failed.Load())
	}
}

// A receiver that never answers: Emit returns at once whatever the
// queue holds, the queue keeps the newest QueueSize deliveries and drops
// the oldest, counting each.
func TestDeadReceiverDropsOldest(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var ev Event
		_ = json.NewDecoder(req.Body).Decode(&ev)
		mu.Lock()
		got = append(got, string(ev.Data))
		mu.Unlock()
		<-release
	}))
	defer srv.Close()
	defer close(release)
	c := &counters{}
	s := New(Options{URLs: []string{srv.URL}, Secret: secret, Counters: c, QueueSize: 3, Concurrency: 1, Timeout: time.Minute})
	s.Start()
	s.Emit(MessageCreated, 0)
	waitFor(t, "the first attempt", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 1 })
	for i := 1; i < 1000; i++ {
		s.Emit(MessageCreated, i)
	}
	if c.dropped.Load() != 996 || s.QueueLen() != 4 { // 3 waiting + 1 being sent
		t.Fatalf("dropped %d, queue %d", c.dropped.Load(), s.QueueLen())
	}
	for range 4 { // each answers 200 in turn
		release <- struct{}{}
	}
	mu.Lock()
	if strings.Join(got, ",") != "0,997,998,999" {
		t.Errorf("delivered %v", got)
	}
	mu.Unlock()
	waitFor(t, "all sent", func() bool { return c.sent.Load() == 4 })
	s.Close(t.Context())
}

// A panic while sending is contained: the attempt counts as failed and
// the delivery is retried.
func TestPanicInAttemptContained(t *testing.T) {
	rec := newReceiver(t, func(int, Event) int { return 204 })
	var n atomic.Int64
	c := &counters{}
	client := &http.Client{Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
		if n.Add(1) == 1 {
			panic("injected")
		}
		return http.DefaultTransport.RoundTrip(r)
	})}
	panics := &panicCount{}
	s := New(Options{URLs: []string{rec.srv.URL}, Secret: secret, Counters: c, Client: client, Panics: panics,
		InitialInterval: 5 * time.Millisecond})
	s.Start()
	defer s.Close(t.Context())
	s.Emit(CallEnded, map[string]string{"room_id": "r"})
	waitFor(t, "the retry after the panic", func() bool { return c.sent.Load() == 1 })
	if panics.n.Load() != 1 || c.retried.Load() != 1 {
		t.Fatalf("panics %d retried %d", panics.n.Load(), c.retried.Load())
	}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

type panicCount struct{ n atomic.Int64 }

func (p *panicCount) Panic(string) { p.n.Add(1) }

// Close sends what is due before it returns (within its deadline), to
// every URL.
func TestCloseFlushes(t *testing.T) {
	var recs []*receiver
	var urls []string
	for range 2 {
		r := newReceiver(t, func(int, Event) int { return 200 })
		recs = append(recs, r)
		urls = append(urls, r.srv.URL)
	}
	s := New(Options{URLs: urls, Secret: secret})
	for i := range 50 {
		s.Emit(RoomClientJoined, map[string]string{"client_id": strconv.Itoa(i)})
	}
	s.Start()
	s.Close(t.Context())
	for i, r := range recs {
		if n := len(r.got()); n != 50 {
			t.Errorf("receiver %d got %d", i, n)
		}
	}
	s.Emit(RoomFinished, nil) // after Close: ignored, no panic
	var nilSender *Sender
	nilSender.Emit(RoomFinished, nil)
	nilSender.Close(t.Context())
}
