package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/parleyhq/parley/internal/safe"
)

// DefaultMaxBatch is the batch size limit a Committer uses when
// CommitterOptions.MaxBatch is not set.
const DefaultMaxBatch = 1000

var (
	// ErrCommitterClosed is passed to the done callback of an update
	// submitted after Close.
	ErrCommitterClosed = errors.New("store: committer closed")
	// ErrSkipped is passed (joined with the original error) to the done
	// callback of an update that was not written because an earlier update
	// of the same room failed: writing it would leave a gap in the room's
	// versions.
	ErrSkipped = errors.New("store: update not written: an earlier update of the same room failed")
)

// CommitterOptions configures a Committer.
type CommitterOptions struct {
	// MaxBatch is the most updates written by one AppendUpdates call
	// (DefaultMaxBatch when <= 0).
	MaxBatch int
	// Timeout bounds each AppendUpdates call (no limit when 0): when the
	// database hangs, the batch fails with context.DeadlineExceeded instead
	// of holding every later update. A timed-out write may still have been
	// committed; callers handle it like any other failure (reload the room).
	Timeout time.Duration
	// Logger receives failed batches (slog.Default() when nil).
	Logger *slog.Logger
	// Panics counts panics contained in done callbacks, in OnBatch and in
	// AppendUpdates (parley_panics_total{where="commit_callback"}); nil is
	// allowed.
	Panics safe.Counter
	// OnBatch, when set, is called on the Committer's goroutine after each
	// AppendUpdates call (successful or not) with the number of updates it
	// wrote, before their callbacks (e.g. to observe
	// parley_storage_commit_batch_size). It must be quick.
	OnBatch func(updates int)
}

// CommitterStats are a Committer's counters since it was created.
type CommitterStats struct {
	Batches uint64 // AppendUpdates calls made
	Updates uint64 // updates passed to those calls
	Failed  uint64 // updates whose done got an error (failed, skipped or after Close)
	Pending int    // updates queued or being written
}

type pending struct {
	u    DocUpdate
	done func(error)
	err  error // set when the update must not be written (see ErrSkipped)
}

// Committer batches DocUpdates from many rooms into few AppendUpdates calls (one
// transaction, one fsync each). Submit never blocks on I/O; done is called exactly once,
// after the update is durable (err == nil) or failed, and callbacks are invoked in
// submission order. At most one AppendUpdates runs at a time; while it runs, new
// submissions queue and form the next batch (up to MaxBatch updates).
//
// The callbacks run one after the other on the Committer's own goroutine, so
// they must be quick and must not call Close. A failed AppendUpdates fails
// every update of its batch with that error; updates of the same rooms that
// were submitted before the room's own callbacks in that batch returned, and
// are not yet written, then fail too (ErrSkipped), so a room's stored
// versions never get a gap. What a room submits after its failure callbacks
// returned (say, its updates replayed from the last durable version) is
// written normally. Updates of other rooms are unaffected, except by a
// failure they share: when the group commit fails with ErrConflict (one
// room's version was already written, e.g. by another node) or ErrFenced
// (one room's epoch is stale: a newer owner fenced it), each room's
// updates are written again in a transaction of their own, so only the
// conflicting or fenced room fails (with that error). A failed call wrote
// nothing (all or nothing), so the retry cannot write an update twice.
//
// A panic in a callback (or in OnBatch or AppendUpdates) is contained,
// logged and counted (CommitterOptions.Panics): the other callbacks are still
// called and the Committer goes on. A panic in AppendUpdates fails its batch
// like an error. A panicking callback's own room is responsible for
// recovering its state (the rooms package resets the room).
//
// The queue is not bounded: callers that can outrun the disk should watch
// Stats().Pending.
type Committer struct {
	s       Appender
	max     int
	timeout time.Duration
	log     *slog.Logger
	panics  safe.Counter
	onBatch func(int)

	mu     sync.Mutex
	queue  []pending // queue[head:] waits for the next batch
	head   int
	failed map[string]error // rooms whose failure callbacks have not all returned
	closed bool
	stats  CommitterStats

	wake    chan struct{} // capacity 1: "the queue or closed changed"
	stopped chan struct{} // closed when run returns
}

// NewCommitter starts a Committer writing into s (a Store, or anything that
// appends updates). Close it to stop it; it does not close s.
func NewCommitter(s Appender, opts CommitterOptions) *Committer {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = DefaultMaxBatch
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	c := &Committer{
		s:       s,
		max:     opts.MaxBatch,
		timeout: opts.Timeout,
		log:     opts.Logger,
		panics:  opts.Panics,
		onBatch: opts.OnBatch,
		failed:  make(map[string]error),
		wake:    make(chan struct{}, 1),
		stopped: make(chan struct{}),
	}
	go c.run()
	return c
}

// Submit queues u for the next batch; done (which may be nil) is called once
// u is durable or has failed. After Close, done gets ErrCommitterClosed (on a
// new goroutine, so that a caller holding a lock its callback takes does not
// deadlock).
func (c *Committer) Submit(u DocUpdate, done func(error)) {
	if done == nil {
		done = func(error) {}
	}
	c.mu.Lock()
	if c.closed {
		c.stats.Failed++
		c.mu.Unlock()
		safe.Go(c.log, c.panics, safe.CommitCallback, func() { done(ErrCommitterClosed) }, nil)
		return
	}
	p := pending{u: u, done: done}
	if err, ok := c.failed[u.RoomID]; ok {
		p.err = skipped(err)
	}
	c.queue = append(c.queue, p)
	c.stats.Pending++
	c.mu.Unlock()
	c.signal()
}

// Close stops accepting updates, waits until everything submitted before it
// is written (or failed) and its done called, then returns. It is safe to
// call more than once; it must not be called from a done callback.
func (c *Committer) Close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.signal()
	<-c.stopped
}

// Stats returns the Committer's counters.
func (c *Committer) Stats() CommitterStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

func (c *Committer) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *Committer) write(updates []DocUpdate) error {
	ctx := context.Background()
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	return c.appendUpdates(ctx, updates)
}

// appendUpdates calls the store, turning a panic into an error.
func (c *Committer) appendUpdates(ctx context.Context, updates []DocUpdate) (err error) {
	defer safe.Recover(c.log, c.panics, safe.CommitCallback, func(v any) {
		err = fmt.Errorf("store: append updates panicked: %v", v)
	})
	return c.s.AppendUpdates(ctx, updates)
}

// observe reports one AppendUpdates call of n updates to OnBatch.
func (c *Committer) observe(n int) {
	if c.onBatch != nil {
		c.call(func() { c.onBatch(n) })
	}
}

// manyRooms reports whether updates belong to more than one room.
func manyRooms(updates []DocUpdate) bool {
	for _, u := range updates[1:] {
		if u.RoomID != updates[0].RoomID {
			return true
		}
	}
	return false
}

// writeEachRoom writes updates (whose group commit failed with ErrConflict
// or ErrFenced, so none of them was written) again, one transaction per
// room, so that one room's conflict or fencing does not fail the others. It
// returns each room's error (nil: written) and counts the extra calls in
// Stats and OnBatch.
func (c *Committer) writeEachRoom(updates []DocUpdate) map[string]error {
	var rooms []string
	byRoom := make(map[string][]DocUpdate)
	for _, u := range updates {
		if _, ok := byRoom[u.RoomID]; !ok {
			rooms = append(rooms, u.RoomID)
		}
		byRoom[u.RoomID] = append(byRoom[u.RoomID], u)
	}
	errs := make(map[string]error, len(rooms))
	for _, room := range rooms {
		errs[room] = c.write(byRoom[room])
		c.observe(len(byRoom[room]))
		c.mu.Lock()
		c.stats.Batches++
		c.mu.Unlock()
	}
	return errs
}

// call runs f with panics contained (the Committer goes on).
func (c *Committer) call(f func()) {
	defer safe.Recover(c.log, c.panics, safe.CommitCallback, nil)
	f()
}

// isolable reports whether a failed group commit is worth writing again
// room by room: the store refused one room's updates (a version already
// written, a stale epoch), which says nothing about the other rooms.
// Other failures (I/O, timeouts) would fail the retries too.
func isolable(err error) bool {
	return errors.Is(err, ErrConflict) || errors.Is(err, ErrFenced)
}

func skipped(err error) error { return fmt.Errorf("%w: %w", ErrSkipped, err) }

// next waits for queued updates and takes up to max of them into batch. It
// returns false once the Committer is closed and the queue is empty.
func (c *Committer) next(batch []pending) ([]pending, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.head == len(c.queue) {
		if c.closed {
			return batch, false
		}
		c.mu.Unlock()
		<-c.wake
		c.mu.Lock()
	}
	end := min(len(c.queue), c.head+c.max)
	batch = append(batch, c.queue[c.head:end]...)
	clear(c.queue[c.head:end]) // let the GC have the payloads
	c.head = end
	switch {
	case c.head == len(c.queue):
		c.queue, c.head = c.queue[:0], 0
	case c.head >= len(c.queue)/2:
		n := copy(c.queue, c.queue[c.head:])
		clear(c.queue[n:])
		c.queue, c.head = c.queue[:n], 0
	}
	return batch, true
}

func (c *Committer) run() {
	defer close(c.stopped)
	var (
		batch   []pending
		updates []DocUpdate
		ok      bool
	)
	for {
		batch, ok = c.next(batch[:0])
		if !ok {
			return
		}
		updates = updates[:0]
		for _, p := range batch {
			if p.err == nil {
				updates = append(updates, p.u)
			}
		}
		var (
			err      error
			roomErrs map[string]error // set when the batch was retried room by room
		)
		if len(updates) > 0 {
			err = c.write(updates)
			c.observe(len(updates))
			if isolable(err) && manyRooms(updates) {
				roomErrs = c.writeEachRoom(updates)
			}
		}
		errOf := func(room string) error {
			if roomErrs != nil {
				return roomErrs[room]
			}
			return err
		}

		c.mu.Lock()
		if len(updates) > 0 {
			c.stats.Batches++
			c.stats.Updates += uint64(len(updates))
		}
		if err != nil {
			// Later updates of the failed rooms build on the failed ones:
			// fail those already queued, and (through c.failed) those
			// submitted until the callbacks below have told the rooms.
			for _, u := range updates {
				if e := errOf(u.RoomID); e != nil {
					c.failed[u.RoomID] = e
				}
			}
			for i := c.head; i < len(c.queue); i++ {
				q := &c.queue[i]
				if e, ok := c.failed[q.u.RoomID]; ok && q.err == nil {
					q.err = skipped(e)
				}
			}
		}
		for _, p := range batch {
			if p.err != nil || errOf(p.u.RoomID) != nil {
				c.stats.Failed++
			}
		}
		c.stats.Pending -= len(batch)
		c.mu.Unlock()

		if err != nil {
			c.log.Error("store: group commit failed", "updates", len(updates), "retried_per_room", roomErrs != nil, "err", err)
		}
		var last map[string]int // failed room → index of its last written update in batch
		if err != nil {
			last = make(map[string]int)
			for i, p := range batch {
				if p.err == nil && errOf(p.u.RoomID) != nil {
					last[p.u.RoomID] = i
				}
			}
		}
		for i, p := range batch {
			e := p.err
			if e == nil {
				e = errOf(p.u.RoomID)
			}
			c.call(func() { p.done(e) })
			if e != nil && p.err == nil && last[p.u.RoomID] == i {
				// The room has been told: what it submits now is written.
				c.mu.Lock()
				delete(c.failed, p.u.RoomID)
				c.mu.Unlock()
			}
		}
		clear(batch)
		clear(updates)
	}
}
