package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/internal/store"
)

// benchOps is a typical small storage update.
var benchOps = json.RawMessage(`[{"op":"replace","path":"/counter","value":12345}]`)

// BenchAppendSingle measures AppendUpdates with one update per call: one
// transaction, one fsync per update. It reports ops/s.
func BenchAppendSingle(b *testing.B, s store.Store) {
	room := "bench-single-" + uuid.NewString()
	ctx := context.Background()
	b.ReportAllocs()
	var v int64
	for b.Loop() {
		v++
		if err := s.AppendUpdates(ctx, []store.DocUpdate{{RoomID: room, Version: v, ClientID: "c", Ops: benchOps}}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(v)/b.Elapsed().Seconds(), "ops/s")
}

// BenchAppendBatch measures AppendUpdates with size updates (of one room)
// per call: the store's cost per update once the fsync is shared. It reports
// updates/s.
func BenchAppendBatch(b *testing.B, s store.Store, size int) {
	room := "bench-batch-" + uuid.NewString()
	ctx := context.Background()
	batch := make([]store.DocUpdate, size)
	b.ReportAllocs()
	var v int64
	for b.Loop() {
		for i := range batch {
			v++
			batch[i] = store.DocUpdate{RoomID: room, Version: v, ClientID: "c", Ops: benchOps}
		}
		if err := s.AppendUpdates(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(v)/b.Elapsed().Seconds(), "updates/s")
}

// BenchCommitterParallel measures durable updates through a Committer on s:
// parallelism×GOMAXPROCS goroutines each submit an update into one of rooms
// rooms (versions assigned under a per-room lock, as the rooms layer does)
// and wait until it is durable before the next. It reports ops/s (durable
// updates per second) and updates/batch.
func BenchCommitterParallel(b *testing.B, s store.Store, rooms, parallelism int) {
	type room struct {
		mu   sync.Mutex
		id   string
		next int64
	}
	prefix := "bench-" + uuid.NewString()
	rs := make([]room, rooms)
	for i := range rs {
		rs[i].id = fmt.Sprintf("%s-%d", prefix, i)
	}
	c := store.NewCommitter(s, store.CommitterOptions{})
	defer c.Close()
	var counter atomic.Uint64

	b.ReportAllocs()
	b.SetParallelism(parallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		done := make(chan error, 1)
		cb := func(err error) { done <- err }
		for pb.Next() {
			r := &rs[counter.Add(1)%uint64(rooms)]
			r.mu.Lock()
			r.next++
			c.Submit(store.DocUpdate{RoomID: r.id, Version: r.next, ClientID: "c", Ops: benchOps}, cb)
			r.mu.Unlock()
			if err := <-done; err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	st := c.Stats()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	if st.Batches > 0 {
		b.ReportMetric(float64(st.Updates)/float64(st.Batches), "updates/batch")
	}
}
