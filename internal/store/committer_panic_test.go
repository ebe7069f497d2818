package store_test

import (
	"encoding/json"
	"errors"
	"sync"
	"testing"

	"github.com/parleyhq/parley/internal/store"
)

type panicCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *panicCounter) Panic(where string) { c.mu.Lock(); c.n[where]++; c.mu.Unlock() }

func (c *panicCounter) get(where string) int { c.mu.Lock(); defer c.mu.Unlock(); return c.n[where] }

func upd(room string, v int64) store.DocUpdate {
	return store.DocUpdate{RoomID: room, Version: v, ClientID: "c", Ops: json.RawMessage(`[]`)}
}

// A panicking done callback is contained: the callbacks after it in the
// same batch still run, later submissions are still written, and the panic
// is counted under commit_callback. On the old Committer the panic ended the
// process.
func TestCommitterCallbackPanicContained(t *testing.T) {
	f := newFake(true)
	pc := &panicCounter{n: map[string]int{}}
	c := newCommitter(t, f, store.CommitterOptions{Panics: pc})
	res := newResults()
	c.Submit(upd("a", 1), res.done("a1"))
	waitEntered(t, f) // a1 is being written; the next two form one batch
	c.Submit(upd("b", 1), func(error) { panic("callback bug") })
	c.Submit(upd("c", 1), res.done("c1"))
	release(t, f, nil)
	if got := waitEntered(t, f); len(got) != 2 {
		t.Fatalf("second batch = %v, want b1 and c1", got)
	}
	release(t, f, nil)
	c.Submit(upd("b", 2), res.done("b2"))
	waitEntered(t, f)
	release(t, f, nil)
	wait(t, &res.wg)
	for _, name := range []string{"a1", "c1", "b2"} {
		if err := res.errs[name]; err != nil || res.calls[name] != 1 {
			t.Errorf("%s: err %v, called %d times", name, err, res.calls[name])
		}
	}
	if n := pc.get("commit_callback"); n != 1 {
		t.Errorf("panics counted = %d, want 1", n)
	}
}

// A store whose AppendUpdates panics fails that batch like an error; the
// Committer keeps writing.
func TestCommitterStorePanicFailsBatch(t *testing.T) {
	f := newFake(false)
	var once sync.Once
	f.fail = func([]store.DocUpdate) error {
		once.Do(func() { panic("driver bug") })
		return nil
	}
	pc := &panicCounter{n: map[string]int{}}
	c := newCommitter(t, f, store.CommitterOptions{Panics: pc})
	errc := make(chan error, 2)
	c.Submit(upd("a", 1), func(err error) { errc <- err })
	if err := <-errc; err == nil {
		t.Fatal("a batch whose write panicked reported success")
	}
	// Another room (room a's own next update would race with the end of
	// its failure callback, see ErrSkipped).
	c.Submit(upd("b", 1), func(err error) { errc <- err })
	if err := <-errc; err != nil {
		t.Fatalf("write after the panic: %v", err)
	}
	if n := pc.get("commit_callback"); n != 1 {
		t.Errorf("panics counted = %d, want 1", n)
	}
}

// OnBatch sees every AppendUpdates call with its size (what feeds
// parley_storage_commit_batch_size), failed ones included.
func TestCommitterOnBatch(t *testing.T) {
	f := newFake(true)
	var (
		mu    sync.Mutex
		sizes []int
	)
	c := newCommitter(t, f, store.CommitterOptions{OnBatch: func(n int) { mu.Lock(); sizes = append(sizes, n); mu.Unlock() }})
	res := newResults()
	c.Submit(upd("a", 1), res.done("a1"))
	waitEntered(t, f)
	for _, r := range []string{"b", "c", "d"} {
		c.Submit(upd(r, 1), res.done(r))
	}
	release(t, f, nil)
	waitEntered(t, f)
	release(t, f, errors.New("disk full"))
	wait(t, &res.wg)
	mu.Lock()
	defer mu.Unlock()
	if len(sizes) != 2 || sizes[0] != 1 || sizes[1] != 3 {
		t.Fatalf("OnBatch sizes = %v, want [1 3]", sizes)
	}
}
