package store_test

import (
	"context"
	"errors"
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
