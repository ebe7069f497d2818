package store_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/parleyhq/parley/internal/store"
	"github.com/parleyhq/parley/internal/store/sqlite"
)

// A conflict in one room (its version already written, as by another node)
// fails only that room's updates, not the other rooms' updates that shared
// the group commit; on a real SQLite file. On the old Committer every
// update of the batch failed.
func TestCommitterConflictIsolated(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "c.db"), sqlite.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.AppendUpdates(ctx, []store.DocUpdate{upd("x", 1)}); err != nil {
		t.Fatal(err)
	}
	gate := &gateStore{Store: st, entered: make(chan struct{}), release: make(chan struct{})}
	var sizes []int
	c := store.NewCommitter(gate, store.CommitterOptions{Logger: quiet, OnBatch: func(n int) { sizes = append(sizes, n) }})
	res := newResults()
	c.Submit(upd("a", 1), res.done("a1"))
	<-gate.entered // a1 is being written: the next three form one batch
	c.Submit(upd("b", 1), res.done("b1"))
	c.Submit(upd("x", 1), res.done("x1")) // conflicts
	c.Submit(upd("b", 2), res.done("b2"))
	c.Submit(upd("x", 2), res.done("x2"))
	close(gate.release)
	wait(t, &res.wg)
	c.Close()
	for _, name := range []string{"a1", "b1", "b2"} {
		if err := res.errs[name]; err != nil {
			t.Errorf("%s failed: %v", name, err)
		}
	}
	if !errors.Is(res.errs["x1"], store.ErrConflict) || !errors.Is(res.errs["x2"], store.ErrConflict) {
		t.Errorf("x1, x2: %v, %v; want ErrConflict", res.errs["x1"], res.errs["x2"])
	}
	for room, want := range map[string]int{"a": 1, "b": 2, "x": 1} {
		if ups, ok, err := st.UpdatesSince(ctx, room, 0); err != nil || !ok || len(ups) != want {
			t.Errorf("room %s stored %d updates (ok %v, err %v), want %d", room, len(ups), ok, err, want)
		}
	}
	// One group commit of a1, one of the four that failed, then b and x
	// each on their own.
	if len(sizes) != 4 || sizes[0] != 1 || sizes[1] != 4 || sizes[2] != 2 || sizes[3] != 2 {
		t.Errorf("AppendUpdates sizes = %v, want [1 4 2 2]", sizes)
	}
}

// An owner epoch refused in one room (a newer owner fenced it) fails only
// that room's updates, with ErrFenced; the other rooms of the group commit
// are written. On a real SQLite file.
func TestCommitterFencedIsolated(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "f.db"), sqlite.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Fence(ctx, "x", 5); err != nil { // x's new owner has epoch 5
		t.Fatal(err)
	}
	gate := &gateStore{Store: st, entered: make(chan struct{}), release: make(chan struct{})}
	var sizes []int
	c := store.NewCommitter(gate, store.CommitterOptions{Logger: quiet, OnBatch: func(n int) { sizes = append(sizes, n) }})
	res := newResults()
	c.Submit(epochUpd("a", 1, 1), res.done("a1"))
	<-gate.entered // a1 is being written: the next four form one batch
	c.Submit(epochUpd("b", 1, 0), res.done("b1"))
	c.Submit(epochUpd("x", 1, 4), res.done("x1")) // the deposed owner's
	c.Submit(epochUpd("b", 2, 0), res.done("b2"))
	c.Submit(epochUpd("x", 2, 4), res.done("x2"))
	close(gate.release)
	wait(t, &res.wg)
	c.Close()
	for _, name := range []string{"a1", "b1", "b2"} {
		if err := res.errs[name]; err != nil {
			t.Errorf("%s failed: %v", name, err)
		}
	}
	for _, name := range []string{"x1", "x2"} {
		if err := res.errs[name]; !errors.Is(err, store.ErrFenced) || errors.Is(err, store.ErrConflict) {
			t.Errorf("%s: %v; want ErrFenced", name, err)
		}
	}
	for room, want := range map[string]int{"a": 1, "b": 2, "x": 0} {
		if ups, ok, err := st.UpdatesSince(ctx, room, 0); err != nil || !ok || len(ups) != want {
			t.Errorf("room %s stored %d updates (ok %v, err %v), want %d", room, len(ups), ok, err, want)
		}
	}
	// a1's epoch was stored; x keeps its fenced epoch.
	if err := st.Fence(ctx, "a", 0); !errors.Is(err, store.ErrFenced) {
		t.Errorf("Fence(a, 0) = %v, want ErrFenced (a1 raised a to 1)", err)
	}
	if err := st.Fence(ctx, "x", 5); err != nil {
		t.Errorf("Fence(x, 5) = %v", err)
	}
	if len(sizes) != 4 || sizes[0] != 1 || sizes[1] != 4 || sizes[2] != 2 || sizes[3] != 2 {
		t.Errorf("AppendUpdates sizes = %v, want [1 4 2 2]", sizes)
	}
	if st := c.Stats(); st.Failed != 2 || st.Batches != 4 || st.Pending != 0 {
		t.Errorf("Stats = %+v, want 2 failed in 4 batches", st)
	}
}

// A group commit with a conflicting room and a fenced room: each fails
// with its own error, the third room is written.
func TestCommitterFencedAndConflictIsolated(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "fc.db"), sqlite.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.AppendUpdates(ctx, []store.DocUpdate{epochUpd("c", 1, 2)}); err != nil {
		t.Fatal(err)
	}
	if err := st.Fence(ctx, "f", 9); err != nil {
		t.Fatal(err)
	}
	gate := &gateStore{Store: st, entered: make(chan struct{}), release: make(chan struct{})}
	c := store.NewCommitter(gate, store.CommitterOptions{Logger: quiet})
	res := newResults()
	c.Submit(epochUpd("a", 1, 0), res.done("a1"))
	<-gate.entered
	c.Submit(epochUpd("f", 1, 8), res.done("f1"))
	c.Submit(epochUpd("c", 1, 2), res.done("c1")) // version 1 already written
	c.Submit(epochUpd("ok", 1, 3), res.done("ok1"))
	c.Submit(epochUpd("ok", 2, 3), res.done("ok2"))
	close(gate.release)
	wait(t, &res.wg)
	c.Close()
	for _, name := range []string{"a1", "ok1", "ok2"} {
		if err := res.errs[name]; err != nil {
			t.Errorf("%s failed: %v", name, err)
		}
	}
	if err := res.errs["f1"]; !errors.Is(err, store.ErrFenced) {
		t.Errorf("f1: %v, want ErrFenced", err)
	}
	if err := res.errs["c1"]; !errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrFenced) {
		t.Errorf("c1: %v, want ErrConflict", err)
	}
	if ups, _, _ := st.UpdatesSince(ctx, "ok", 0); len(ups) != 2 {
		t.Errorf("room ok stored %d updates, want 2", len(ups))
	}
}

// A fenced room's updates submitted while its failure is being reported
// are skipped (ErrSkipped wrapping ErrFenced: the room can tell it lost
// ownership); a batch of one room is not retried.
func TestCommitterFencedSkipsLater(t *testing.T) {
	f := newFake(true)
	c := newCommitter(t, f, store.CommitterOptions{})
	r := newResults()
	fenced := fmt.Errorf("sqlite: append updates: %w: room %q", store.ErrFenced, "x")

	c.Submit(epochUpd("x", 1, 1), r.done("x/1"))
	waitEntered(t, f)
	c.Submit(epochUpd("x", 2, 1), r.done("x/2")) // queued behind the failing x/1
	release(t, f, fenced)
	wait(t, &r.wg)
	if err := r.errs["x/1"]; !errors.Is(err, store.ErrFenced) || errors.Is(err, store.ErrSkipped) {
		t.Errorf("x/1: %v, want ErrFenced", err)
	}
	if err := r.errs["x/2"]; !errors.Is(err, store.ErrSkipped) || !errors.Is(err, store.ErrFenced) {
		t.Errorf("x/2: %v, want ErrSkipped wrapping ErrFenced", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.batches) != 1 {
		t.Errorf("AppendUpdates called %d times, want once (one room: nothing to isolate)", len(f.batches))
	}
}

// epochUpd is an update of room at version v written with an owner epoch.
func epochUpd(room string, v int64, epoch uint64) store.DocUpdate {
	u := upd(room, v)
	u.Epoch = epoch
	return u
}

// gateStore holds its first AppendUpdates call until release is closed.
type gateStore struct {
	store.Store
	entered chan struct{}
	release chan struct{}
	calls   int
}

func (g *gateStore) AppendUpdates(ctx context.Context, us []store.DocUpdate) error {
	g.calls++ // only the Committer's goroutine calls it
	if g.calls == 1 {
		close(g.entered)
		<-g.release
	}
	return g.Store.AppendUpdates(ctx, us)
}
