package safe

import (
	"io"
	"log/slog"
	"sync"
	"testing"
)

type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counter) Panic(w string) { c.mu.Lock(); c.n[w]++; c.mu.Unlock() }

func TestRecoverCountsAndCleansUp(t *testing.T) {
	c := &counter{n: map[string]int{}}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var got any
	func() {
		defer Recover(log, c, WSReader, func(v any) { got = v })
		panic("boom")
	}()
	if got != "boom" || c.n[string(WSReader)] != 1 {
		t.Fatalf("cleanup got %v, counts %v", got, c.n)
	}
	// A panicking cleanup is contained too.
	func() {
		defer Recover(log, c, HTTP, func(any) { panic("again") })
		panic("first")
	}()
	if c.n[string(HTTP)] != 2 {
		t.Fatalf("counts %v", c.n)
	}
	// No panic: nothing counted, cleanup not called.
	called := false
	func() { defer Recover(log, c, Room, func(any) { called = true }) }()
	if called || c.n[string(Room)] != 0 {
		t.Fatal("Recover acted without a panic")
	}
	done := make(chan struct{})
	Go(log, c, Chat, func() { panic("in goroutine") }, func(any) { close(done) })
	<-done
}
