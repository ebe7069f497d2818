package store_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/store"
)

// fakeStore records AppendUpdates calls. With gated set, each call first
// announces its batch on entered and then waits for a value on release (nil
// = success). Other Store methods are not used by the Committer.
type fakeStore struct {
	store.Store
	gated   bool
	entered chan []store.DocUpdate
	release chan error
	stop    chan struct{}                 // closed when the test ends: gated calls fail at once
	fail    func([]store.DocUpdate) error // ungated: the result of a call

	mu      sync.Mutex
	batches [][]store.DocUpdate
	active  int
	overlap bool
}

func newFake(gated bool) *fakeStore {
	return &fakeStore{gated: gated, entered: make(chan []store.DocUpdate, 100), release: make(chan error), stop: make(chan struct{})}
}

var errTestEnded = errors.New("test ended")

// newCommitter starts a Committer on f that is closed when the test ends,
// after f is unblocked (so that a failing test does not hang in Close).
func newCommitter(t *testing.T, f *fakeStore, opts store.CommitterOptions) *store.Committer {
	opts.Logger = quiet
	c := store.NewCommitter(f, opts)
	t.Cleanup(c.Close)
	t.Cleanup(func() { close(f.stop) })
	return c
}

func (f *fakeStore) AppendUpdates(ctx context.Context, us []store.DocUpdate) error {
	batch := slices.Clone(us)
	f.mu.Lock()
	f.active++
	if f.active > 1 {
		f.overlap = true
	}
	f.batches = append(f.batches, batch)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.active--
		f.mu.Unlock()
	}()
	if f.gated {
		select {
		case f.entered <- batch:
		case <-f.stop:
			return errTestEnded
		}
		select {
		case err := <-f.release:
			return err
		case <-f.stop:
			return errTestEnded
		}
	}
	if f.fail != nil {
		return f.fail(batch)
	}
	return nil
}

func (f *fakeStore) calls() [][]store.DocUpdate {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.batches)
}

const deadline = 10 * time.Second

func waitEntered(t *testing.T, f *fakeStore) []store.DocUpdate {
	t.Helper()
	select {
	case b := <-f.entered:
		return b
	case <-time.After(deadline):
		t.Fatal("timed out waiting for AppendUpdates")
		return nil
	}
}

func release(t *testing.T, f *fakeStore, err error) {
	t.Helper()
	select {
	case f.release <- err:
	case <-time.After(deadline):
		t.Fatal("timed out releasing AppendUpdates")
	}
}

func wait(t *testing.T, wg *sync.WaitGroup) {
	t.Helper()
	ch := make(chan struct{})
	go func() { wg.Wait(); close(ch) }()
	select {
	case <-ch:
	case <-time.After(deadline):
		t.Fatal("timed out waiting for callbacks")
	}
}

// results collects done callbacks in the order they were called.
type results struct {
	mu    sync.Mutex
	order []string
	errs  map[string]error
	calls map[string]int
	wg    sync.WaitGroup
}

func newResults() *results {
	return &results{errs: map[string]error{}, calls: map[string]int{}}
}

func (r *results) done(name string) func(error) {
	r.wg.Add(1)
	return func(err error) {
		r.mu.Lock()
		r.order = append(r.order, name)
		r.errs[name] = err
		r.calls[name]++
		r.mu.Unlock()
		r.wg.Done()
	}
}

func (r *results) check(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, n := range r.calls {
		if n != 1 {
			t.Errorf("done of %s called %d times", name, n)
		}
	}
}

func u(room string, v int64) store.DocUpdate {
	return store.DocUpdate{RoomID: room, Version: v, ClientID: "c"}
}

func name(d store.DocUpdate) string { return fmt.Sprintf("%s/%d", d.RoomID, d.Version) }

func names(us []store.DocUpdate) []string {
	var ns []string
	for _, d := range us {
		ns = append(ns, name(d))
	}
	return ns
}

var quiet = slog.New(slog.DiscardHandler)

func TestCommitterCallbackOrder(t *testing.T) {
	f := newFake(false)
	c := newCommitter(t, f, store.CommitterOptions{MaxBatch: 7})
	r := newResults()
	// 8 goroutines submit into their own rooms; a shared lock gives the
	// global submission order.
	var (
		mu        sync.Mutex
		submitted []string
		wg        sync.WaitGroup
	)
	for g := range 8 {
		wg.Go(func() {
			for v := int64(1); v <= 100; v++ {
				d := u(fmt.Sprint("room", g), v)
				mu.Lock()
				submitted = append(submitted, name(d))
				c.Submit(d, r.done(name(d)))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	wait(t, &r.wg)
	r.check(t)
	if !slices.Equal(r.order, submitted) {
		t.Errorf("callbacks ran out of submission order")
	}
	for name, err := range r.errs {
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	// The store saw every update once, each room's in version order.
	var written []string
	for _, b := range f.calls() {
		if len(b) > 7 {
			t.Errorf("batch of %d updates, MaxBatch is 7", len(b))
		}
		written = append(written, names(b)...)
	}
	if !slices.Equal(written, submitted) {
		t.Errorf("updates written out of submission order")
	}
}

func TestCommitterBatches(t *testing.T) {
	f := newFake(true)
	c := newCommitter(t, f, store.CommitterOptions{MaxBatch: 30})
	r := newResults()

	c.Submit(u("a", 1), r.done("a/1"))
	if got := names(waitEntered(t, f)); !slices.Equal(got, []string{"a/1"}) {
		t.Fatalf("first batch = %v", got)
	}
	// While the first AppendUpdates runs, 100 more queue up.
	for i := range 100 {
		d := u(fmt.Sprint("r", i%10), int64(1+i/10))
		c.Submit(d, r.done(name(d)))
	}
	release(t, f, nil)
	var sizes []int
	for range 4 {
		sizes = append(sizes, len(waitEntered(t, f)))
		release(t, f, nil)
	}
	wait(t, &r.wg)
	r.check(t)
	if !slices.Equal(sizes, []int{30, 30, 30, 10}) {
		t.Errorf("batch sizes after the first = %v, want [30 30 30 10]", sizes)
	}
	if n := len(f.calls()); n != 5 {
		t.Errorf("%d AppendUpdates calls for 101 updates, want 5", n)
	}
	f.mu.Lock()
	overlap := f.overlap
	f.mu.Unlock()
	if overlap {
		t.Errorf("two AppendUpdates calls ran at once")
	}
	if st := c.Stats(); st.Batches != 5 || st.Updates != 101 || st.Failed != 0 || st.Pending != 0 {
		t.Errorf("Stats = %+v", st)
	}
}

func TestCommitterFailure(t *testing.T) {
	f := newFake(true)
	c := newCommitter(t, f, store.CommitterOptions{MaxBatch: 3})
	r := newResults()
	boom := errors.New("disk on fire")

	c.Submit(u("a", 1), r.done("a/1"))
	waitEntered(t, f)
	// Queued while a/1 is written: the next batch is [b/1 c/1 a/2], then
	// [b/2 d/1].
	for _, d := range []store.DocUpdate{u("b", 1), u("c", 1), u("a", 2), u("b", 2), u("d", 1)} {
		c.Submit(d, r.done(name(d)))
	}
	release(t, f, nil)
	if got := names(waitEntered(t, f)); !slices.Equal(got, []string{"b/1", "c/1", "a/2"}) {
		t.Fatalf("second batch = %v", got)
	}
	release(t, f, boom)
	// b/2 depends on the failed b/1: it is not written.
	if got := names(waitEntered(t, f)); !slices.Equal(got, []string{"d/1"}) {
		t.Fatalf("third batch = %v, want [d/1]", got)
	}
	release(t, f, nil)
	wait(t, &r.wg)
	r.check(t)

	for _, n := range []string{"a/1", "d/1"} {
		if err := r.errs[n]; err != nil {
			t.Errorf("%s: %v, want success", n, err)
		}
	}
	for _, n := range []string{"b/1", "c/1", "a/2"} {
		if err := r.errs[n]; !errors.Is(err, boom) || errors.Is(err, store.ErrSkipped) {
			t.Errorf("%s: %v, want the batch's error", n, err)
		}
	}
	if err := r.errs["b/2"]; !errors.Is(err, store.ErrSkipped) || !errors.Is(err, boom) {
		t.Errorf("b/2: %v, want ErrSkipped wrapping the batch's error", err)
	}
	if want := []string{"a/1", "b/1", "c/1", "a/2", "b/2", "d/1"}; !slices.Equal(r.order, want) {
		t.Errorf("callback order %v, want %v", r.order, want)
	}

	// Later updates of the failed rooms (submitted after their callbacks
	// returned) are written normally.
	r2 := newResults()
	c.Submit(u("b", 1), r2.done("b/1 again"))
	if got := names(waitEntered(t, f)); !slices.Equal(got, []string{"b/1"}) {
		t.Fatalf("retry batch = %v", got)
	}
	release(t, f, nil)
	wait(t, &r2.wg)
	if err := r2.errs["b/1 again"]; err != nil {
		t.Errorf("retry: %v", err)
	}
	if st := c.Stats(); st.Failed != 4 || st.Batches != 4 || st.Updates != 6 {
		t.Errorf("Stats = %+v, want 4 failed, 4 batches, 6 updates", st)
	}
}

// TestCommitterSubmitDuringFailureCallbacks checks the window in which a
// failed room's new updates are skipped: an update of the room submitted
// from inside its own failure callback (before the room could react) is not
// written; one submitted after that callback returned (here: from another
// room's callback in the same batch) is.
func TestCommitterSubmitDuringFailureCallbacks(t *testing.T) {
	f := newFake(true)
	c := newCommitter(t, f, store.CommitterOptions{})
	boom := errors.New("boom")
	r := newResults()
	bad2, retry := r.done("bad/2"), r.done("bad/1 retry")

	c.Submit(u("x", 1), r.done("x/1"))
	waitEntered(t, f)
	c.Submit(u("bad", 1), func(err error) {
		if !errors.Is(err, boom) {
			t.Errorf("bad/1: %v", err)
		}
		c.Submit(u("bad", 2), bad2) // built on bad/1: must not be written
	})
	c.Submit(u("good", 1), func(err error) {
		if !errors.Is(err, boom) {
			t.Errorf("good/1: %v", err)
		}
		c.Submit(u("bad", 1), retry) // the bad room replays from its durable version
	})
	release(t, f, nil)
	if got := names(waitEntered(t, f)); !slices.Equal(got, []string{"bad/1", "good/1"}) {
		t.Fatalf("second batch = %v", got)
	}
	release(t, f, boom)
	if got := names(waitEntered(t, f)); !slices.Equal(got, []string{"bad/1"}) {
		t.Fatalf("third batch = %v, want [bad/1] (bad/2 skipped)", got)
	}
	release(t, f, nil)
	wait(t, &r.wg)
	r.check(t)
	if err := r.errs["bad/2"]; !errors.Is(err, store.ErrSkipped) || !errors.Is(err, boom) {
		t.Errorf("bad/2: %v, want ErrSkipped wrapping boom", err)
	}
	if err := r.errs["bad/1 retry"]; err != nil {
		t.Errorf("bad/1 retry: %v", err)
	}
	if want := []string{"x/1", "bad/2", "bad/1 retry"}; !slices.Equal(r.order, want) {
		t.Errorf("callback order %v, want %v", r.order, want)
	}
}

func TestCommitterCloseDrains(t *testing.T) {
	f := newFake(true)
	c := newCommitter(t, f, store.CommitterOptions{MaxBatch: 20})
	r := newResults()
	c.Submit(u("a", 1), r.done("a/1"))
	waitEntered(t, f)
	for v := int64(2); v <= 50; v++ {
		c.Submit(u("a", v), r.done(name(u("a", v))))
	}
	closed := make(chan struct{})
	go func() { c.Close(); close(closed) }()
	// Close waits for the queue: release every batch it still writes.
	written := 1 // a/1 is inside AppendUpdates
	for {
		select {
		case <-closed:
			t.Fatalf("Close returned while a batch was being written (%d of 50 entered)", written)
		default:
		}
		release(t, f, nil)
		if written == 50 {
			break
		}
		written += len(waitEntered(t, f))
	}
	select {
	case <-closed:
	case <-time.After(deadline):
		t.Fatal("Close did not return")
	}
	r.mu.Lock()
	got := len(r.order)
	r.mu.Unlock()
	if got != 50 {
		t.Fatalf("%d callbacks had run when Close returned, want 50", got)
	}
	r.check(t)
	for name, err := range r.errs {
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}

	// After Close: done gets ErrCommitterClosed, nothing is written.
	errc := make(chan error, 1)
	c.Submit(u("a", 51), func(err error) { errc <- err })
	select {
	case err := <-errc:
		if !errors.Is(err, store.ErrCommitterClosed) {
			t.Errorf("Submit after Close: %v, want ErrCommitterClosed", err)
		}
	case <-time.After(deadline):
		t.Fatal("done of a Submit after Close was not called")
	}
	c.Close() // idempotent
	if n := len(f.calls()); n != 4 {
		t.Errorf("%d AppendUpdates calls, want 4 (1 + 49 in batches of 20)", n)
	}
}

// hangingStore's AppendUpdates waits for its context, like a hung database.
type hangingStore struct{ store.Store }

func (hangingStore) AppendUpdates(ctx context.Context, _ []store.DocUpdate) error {
	<-ctx.Done()
	return ctx.Err()
}

func TestCommitterTimeout(t *testing.T) {
	c := store.NewCommitter(hangingStore{}, store.CommitterOptions{Timeout: 20 * time.Millisecond, Logger: quiet})
	defer c.Close()
	errc := make(chan error, 1)
	c.Submit(u("a", 1), func(err error) { errc <- err })
	select {
	case err := <-errc:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("done = %v, want DeadlineExceeded", err)
		}
	case <-time.After(deadline):
		t.Fatal("a hung AppendUpdates was not timed out")
	}
}
