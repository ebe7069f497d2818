// Package webhook tells an application's backend what happens in Parley
// (PROTOCOL.md v1.1 §7): every event is POSTed as JSON
// {id, event, created_at, data} to each configured URL, signed with
// HMAC-SHA256 in the Parley-Signature header (signature.go).
//
// Delivery is at least once: a non-2xx answer, a timeout or a network
// error is retried with exponential backoff (github.com/cenkalti/backoff)
// for at least Options.RetryFor; the event keeps its id on every attempt,
// so a receiver drops duplicates by id.
//
// The real-time path never waits for a receiver: Emit encodes the event
// and appends it to each URL's bounded in-memory queue under a short lock,
// and returns. Workers (Options.Concurrency per URL) take deliveries whose
// time has come, oldest first; a failed one goes back with its next
// attempt's time. When a queue is full the oldest delivery waiting in it
// (not one being sent) is dropped and counted. The queue lives in memory:
// a crash loses what it holds (docs/server-api.md); a graceful shutdown
// tries to send what is due until its deadline (Close).
package webhook

import (
	"bytes"
	"container/heap"
	"container/list"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/google/uuid"

	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/safe"
)

// Event names (PROTOCOL.md v1.1 §7). The set is fixed.
const (
	RoomStarted           = "room.started"
	RoomFinished          = "room.finished"
	RoomClientJoined      = "room.client_joined"
	RoomClientLeft        = "room.client_left"
	CallStarted           = "call.started"
	CallEnded             = "call.ended"
	CallParticipantJoined = "call.participant_joined"
	CallParticipantLeft   = "call.participant_left"
	MessageCreated        = "message.created"
	UserOnline            = "user.online"
	UserOffline           = "user.offline"
)

// Events is every event name.
var Events = []string{RoomStarted, RoomFinished, RoomClientJoined, RoomClientLeft, CallStarted, CallEnded,
	CallParticipantJoined, CallParticipantLeft, MessageCreated, UserOnline, UserOffline}

// Event is the body of one webhook.
type Event struct {
	ID        string          `json:"id"`
	Event     string          `json:"event"`
	CreatedAt string          `json:"created_at"`
	Data      json.RawMessage `json:"data"`
}

// Emitter is what the event sources take (a *Sender; nil-safe there).
type Emitter interface {
	Emit(event string, data any)
}

// Counters counts deliveries (internal/metrics implements it; nil is
// allowed).
type Counters interface {
	WebhookSent()    // a 2xx answer
	WebhookRetried() // a failed attempt that will be retried
	WebhookFailed()  // a delivery given up after RetryFor
	WebhookDropped() // a delivery dropped from a full queue
}

// Options configure a Sender.
type Options struct {
	URLs   []string
	Secret []byte
	// QueueSize bounds the deliveries waiting per URL (default 10000).
	QueueSize int
	// Timeout bounds one POST (default 10 s).
	Timeout time.Duration
	// RetryFor: a delivery whose first attempt was this long ago is not
	// retried again (default 15 min; config enforces at least 10 min).
	RetryFor time.Duration
	// Concurrency is the POSTs in flight at once per URL (default 4).
	Concurrency int
	// InitialInterval and MaxInterval shape the exponential backoff
	// between attempts (defaults 1 s and 2 min; randomised by ±50 %).
	InitialInterval, MaxInterval time.Duration
	// Client sends the POSTs (default: an http.Client that does not follow
	// redirects: a 3xx is a failed attempt).
	Client   *http.Client
	Counters Counters
	Panics   safe.Counter
	Log      *slog.Logger
}

// Sender delivers events to the configured URLs. A nil *Sender ignores
// Emit (webhooks off).
type Sender struct {
	opts    Options
	targets []*target
	ctx     context.Context // ends the workers (Close)
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closed  atomic.Bool
	started atomic.Bool
}

// New returns a Sender for opts.URLs, or nil when there is none. Start
// runs its workers.
func New(opts Options) *Sender {
	if len(opts.URLs) == 0 {
		return nil
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = 10000
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.RetryFor <= 0 {
		opts.RetryFor = 15 * time.Minute
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 4
	}
	if opts.InitialInterval <= 0 {
		opts.InitialInterval = time.Second
	}
	if opts.MaxInterval <= 0 {
		opts.MaxInterval = 2 * time.Minute
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = opts.Concurrency
		opts.Client = &http.Client{Transport: tr,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	s := &Sender{opts: opts}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	for _, u := range opts.URLs {
		s.targets = append(s.targets, &target{url: u, order: list.New(), wake: make(chan struct{}, 1)})
	}
	return s
}

// Start runs the workers (Concurrency per URL) until Close.
func (s *Sender) Start() {
	if s == nil || !s.started.CompareAndSwap(false, true) {
		return
	}
	for _, t := range s.targets {
		for range s.opts.Concurrency {
			s.wg.Add(1)
			go s.work(t)
		}
	}
}

// Emit queues event with data (any JSON-encodable value) for every URL
// and returns at once: it never waits for a receiver. A nil Sender does
// nothing.
func (s *Sender) Emit(event string, data any) {
	if s == nil || s.closed.Load() {
		return
	}
	enc, err := protocol.Marshal(data)
	if err != nil {
		s.opts.Log.Error("webhook: encode event data", "event", event, "err", err)
		return
	}
	now := time.Now()
	body, _ := protocol.Marshal(Event{ID: uuid.NewString(), Event: event, CreatedAt: protocol.FormatTime(now), Data: enc})
	for _, t := range s.targets {
		if t.push(&delivery{body: body, event: event, queued: now, due: now}, s.opts.QueueSize) {
			s.count(Counters.WebhookDropped)
		}
	}
}

// QueueLen is the deliveries not finished (waiting or being sent), all
// URLs together.
func (s *Sender) QueueLen() int {
	if s == nil {
		return 0
	}
	n := 0
	for _, t := range s.targets {
		t.mu.Lock()
		n += t.order.Len()
		t.mu.Unlock()
	}
	return n
}

// Close stops taking events, keeps sending the deliveries that are due
// until ctx ends or none is left, then stops the workers (an attempt in
// flight is abandoned). What is still queued then is lost and logged.
func (s *Sender) Close(ctx context.Context) {
	if s == nil || !s.closed.CompareAndSwap(false, true) {
		return
	}
	if s.started.Load() {
		tick := time.NewTicker(20 * time.Millisecond)
		for s.dueLeft(time.Now()) > 0 && ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-tick.C:
			}
		}
		tick.Stop()
	}
	s.cancel()
	s.wg.Wait()
	if n := s.QueueLen(); n > 0 {
		s.opts.Log.Warn("webhook: deliveries not sent at shutdown (the queue is in memory)", "deliveries", n)
	}
}

// dueLeft counts deliveries due by now or being sent.
func (s *Sender) dueLeft(now time.Time) int {
	n := 0
	for _, t := range s.targets {
		t.mu.Lock()
		n += t.inflight
		if len(t.due) > 0 && !t.due[0].due.After(now) {
			n++
		}
		t.mu.Unlock()
	}
	return n
}

func (s *Sender) count(f func(Counters)) {
	if s.opts.Counters != nil {
		f(s.opts.Counters)
	}
}

// ---- one URL's queue ----

// delivery is one event for one URL.
type delivery struct {
	body     []byte
	event    string
	queued   time.Time // when it was queued (ties between equal due times)
	first    time.Time // first attempt (zero until then): RetryFor counts from it
	due      time.Time // next attempt
	attempts int
	bo       *backoff.ExponentialBackOff
	elem     *list.Element // in target.order while not finished
	hidx     int           // index in target.due; -1 while being sent
}

// target is one URL: every unfinished delivery in arrival order (order:
// the oldest is dropped first) and those waiting by due time (due).
type target struct {
	url      string
	mu       sync.Mutex
	order    *list.List
	due      dueHeap
	inflight int
	wake     chan struct{}
}

// push queues d; when the queue is full it first drops the oldest
// delivery that is not being sent, and reports that it did.
func (t *target) push(d *delivery, max int) (dropped bool) {
	t.mu.Lock()
	if t.order.Len()-t.inflight >= max {
		dropped = t.dropOldestLocked()
	}
	d.elem = t.order.PushBack(d)
	heap.Push(&t.due, d)
	t.mu.Unlock()
	t.poke()
	return dropped
}

// requeue puts back a delivery that failed and will be retried.
func (t *target) requeue(d *delivery, max int) (dropped bool) {
	t.mu.Lock()
	t.inflight--
	heap.Push(&t.due, d) // waiting again: it may be the oldest to drop
	if t.order.Len()-t.inflight > max {
		dropped = t.dropOldestLocked()
	}
	t.mu.Unlock()
	t.poke()
	return dropped
}

// finish forgets a delivery that was sent or given up.
func (t *target) finish(d *delivery) {
	t.mu.Lock()
	t.inflight--
	if d.elem != nil {
		t.order.Remove(d.elem)
		d.elem = nil
	}
	t.mu.Unlock()
}

// dropOldestLocked removes the oldest delivery that is waiting (at most
// Concurrency are being sent, so the walk is short). Needs t.mu.
func (t *target) dropOldestLocked() bool {
	for e := t.order.Front(); e != nil; e = e.Next() {
		d := e.Value.(*delivery)
		if d.hidx < 0 {
			continue // being sent
		}
		heap.Remove(&t.due, d.hidx)
		t.order.Remove(e)
		d.elem = nil
		return true
	}
	return false
}

// next takes the delivery due first when its time has come, else says how
// long to wait (0: nothing queued).
func (t *target) next(now time.Time) (*delivery, time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.due) == 0 {
		return nil, 0
	}
	d := t.due[0]
	if wait := d.due.Sub(now); wait > 0 {
		return nil, wait
	}
	heap.Pop(&t.due)
	t.inflight++
	if len(t.due) > 0 && !t.due[0].due.After(now) {
		t.poke() // more is due: wake another worker
	}
	return d, 0
}

func (t *target) poke() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// work is one worker of t: it sends due deliveries until Close.
func (s *Sender) work(t *target) {
	defer s.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if s.ctx.Err() != nil {
			return
		}
		d, wait := t.next(time.Now())
		if d == nil {
			if wait <= 0 {
				wait = time.Hour
			}
			timer.Reset(wait)
			select {
			case <-s.ctx.Done():
				return
			case <-t.wake:
			case <-timer.C:
			}
			continue
		}
		s.attempt(t, d)
	}
}

// attempt sends d once and files the outcome. A panic is contained
// (counted as safe.Webhook): the delivery counts as a failed attempt.
func (s *Sender) attempt(t *target, d *delivery) {
	if d.first.IsZero() {
		d.first = time.Now() // a backlog's wait does not eat into RetryFor
	}
	ok := false
	func() {
		defer safe.Recover(s.opts.Log, s.opts.Panics, safe.Webhook, nil)
		ok = s.post(t.url, d)
	}()
	now := time.Now()
	switch {
	case ok:
		t.finish(d)
		s.count(Counters.WebhookSent)
	case s.ctx.Err() != nil:
		// Shutting down: the attempt was cut; keep it counted as queued.
		t.mu.Lock()
		t.inflight--
		t.mu.Unlock()
	case now.Sub(d.first) >= s.opts.RetryFor:
		t.finish(d)
		s.count(Counters.WebhookFailed)
		s.opts.Log.Warn("webhook: delivery given up", "url", t.url, "event", d.event, "attempts", d.attempts,
			"since", d.first.UTC().Format(time.RFC3339))
	default:
		if d.bo == nil {
			d.bo = &backoff.ExponentialBackOff{InitialInterval: s.opts.InitialInterval, RandomizationFactor: 0.5,
				Multiplier: 2, MaxInterval: s.opts.MaxInterval}
			d.bo.Reset()
		}
		d.due = now.Add(d.bo.NextBackOff())
		s.count(Counters.WebhookRetried)
		if t.requeue(d, s.opts.QueueSize) {
			s.count(Counters.WebhookDropped)
		}
	}
}

// post makes one attempt: true on a 2xx answer within Timeout.
func (s *Sender) post(url string, d *delivery) bool {
	d.attempts++
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(d.body))
	if err != nil {
		s.opts.Log.Error("webhook: request", "url", url, "err", err)
		return false
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Parley-Webhook/1")
	req.Header.Set(SignatureHeader, Sign(s.opts.Secret, time.Now(), d.body))
	resp, err := s.opts.Client.Do(req)
	if err != nil {
		s.opts.Log.Debug("webhook: attempt failed", "url", url, "event", d.event, "attempt", d.attempts, "err", err)
		return false
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		s.opts.Log.Debug("webhook: attempt refused", "url", url, "event", d.event, "attempt", d.attempts, "status", resp.StatusCode)
		return false
	}
	return true
}

// dueHeap orders waiting deliveries by due time.
type dueHeap []*delivery

func (h dueHeap) Len() int { return len(h) }
func (h dueHeap) Less(i, j int) bool {
	if h[i].due.Equal(h[j].due) {
		return h[i].queued.Before(h[j].queued)
	}
	return h[i].due.Before(h[j].due)
}
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].hidx, h[j].hidx = i, j
}
func (h *dueHeap) Push(x any) {
	d := x.(*delivery)
	d.hidx = len(*h)
	*h = append(*h, d)
}
func (h *dueHeap) Pop() any {
	old := *h
	d := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	d.hidx = -1
	return d
}
