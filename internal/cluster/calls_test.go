package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// dropCallsBucket deletes <cluster>_calls when the test ends (newCluster
// deletes the other two buckets).
func dropCallsBucket(t *testing.T, url, cluster string) {
	t.Cleanup(func() {
		nc, err := nats.Connect(url)
		if err != nil {
			return
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = js.DeleteKeyValue(ctx, cluster+"_calls")
	})
}

// callRec is a CallHandler that records everything in order, answers
// "echo" with its data, "fail" with an error, and panics on "panic".
type callRec struct {
	mu         sync.Mutex
	events     []string
	busy       atomic.Bool
	concurrent atomic.Int64
}

func (r *callRec) add(ev string) {
	if !r.busy.CompareAndSwap(false, true) {
		r.concurrent.Add(1)
	}
	defer r.busy.Store(false)
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
}

func (r *callRec) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.events...)
}

func (r *callRec) CallRequest(req CallRequest) CallReply {
	r.add(fmt.Sprintf("req:%s:%s:%s:%s:%s", req.Op, req.Node, req.RoomID, req.ConnID, req.Data))
	switch req.Op {
	case "panic":
		panic("handler panic (test)")
	case "fail":
		return CallReply{Code: "not_found", Message: "no call in room " + req.RoomID}
	}
	return CallReply{Data: append([]byte("echo:"), req.Data...)}
}
func (r *callRec) ConnFrame(connID string, frame []byte) {
	r.add("conn:" + connID + ":" + string(frame))
}
func (r *callRec) NodeDown(node string) { r.add("down:" + node) }

func startCalls(t *testing.T, n *Node) *callRec {
	t.Helper()
	rec := &callRec{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.StartCalls(ctx, rec); err != nil {
		t.Fatalf("StartCalls on %s: %v", n.id, err)
	}
	return rec
}

// Call leases: create only when free, compare-and-set take-over, clear
// only the current lease; separate from room leases. Against the embedded
// server and NATS 2.9.
func TestCallLeases(t *testing.T) {
	forEachServer(t, func(t *testing.T, url string) {
		cluster := newCluster(t, url)
		dropCallsBucket(t, url, cluster)
		a, _ := join(t, url, cluster, "a")
		b, _ := join(t, url, cluster, "b")
		startCalls(t, a)
		startCalls(t, b)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		room := "team.general:call"
		if _, ok, err := a.CallLease(ctx, room); ok || err != nil {
			t.Fatalf("lease before any: ok=%v err=%v", ok, err)
		}
		l1, err := a.AcquireCall(ctx, room, nil)
		if err != nil || l1.Node != "a" || l1.Epoch == 0 {
			t.Fatalf("create: %+v %v", l1, err)
		}
		if _, ok, _ := a.Lease(ctx, room); ok {
			t.Fatal("a call lease is also a room lease")
		}
		if got, ok, err := b.CallLease(ctx, room); !ok || err != nil || got != l1 {
			t.Fatalf("b reads %+v ok=%v err=%v, want %+v", got, ok, err, l1)
		}
		if _, err := b.AcquireCall(ctx, room, nil); !errors.Is(err, ErrCallLeaseTaken) {
			t.Fatalf("second create: %v", err)
		}
		l2, err := b.AcquireCall(ctx, room, &l1)
		if err != nil || l2.Node != "b" || l2.Epoch <= l1.Epoch {
			t.Fatalf("take over: %+v %v", l2, err)
		}
		if _, err := a.AcquireCall(ctx, room, &l1); !errors.Is(err, ErrCallLeaseTaken) {
			t.Fatalf("stale take over: %v", err)
		}
		if deleted, err := a.ClearCall(ctx, room, l1); deleted || err != nil {
			t.Fatalf("stale clear: %v %v", deleted, err)
		}
		if deleted, err := a.ClearCall(ctx, room, l2); !deleted || err != nil {
			t.Fatalf("clear by another node: %v %v", deleted, err)
		}
		if _, ok, err := b.CallLease(ctx, room); ok || err != nil {
			t.Fatalf("lease after clear: ok=%v err=%v", ok, err)
		}
		l3, err := b.AcquireCall(ctx, room, nil)
		if err != nil || l3.Epoch <= l2.Epoch {
			t.Fatalf("create after clear: %+v %v", l3, err)
		}
	})
}

// Call requests and connection frames between two nodes: the request
// carries the sender's node, replies and errors come back, a panicking
// handler answers internal and the next request is served, frames arrive
// in order, everything on one goroutine; a dead node is
// ErrMediaNodeUnreachable, and its NodeDown comes after the frames it
// sent before dying.
func TestCallRelay(t *testing.T) {
	url := startEmbedded(t).url()
	cluster := newCluster(t, url)
	dropCallsBucket(t, url, cluster)
	a, _ := join(t, url, cluster, "a")
	b, _ := join(t, url, cluster, "b")
	ra := startCalls(t, a)
	rb := startCalls(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	rep, err := a.RequestCall(ctx, "b", CallRequest{Op: "echo", RoomID: "r", ConnID: "c1", Data: []byte(`{"x":1}`)})
	if err != nil || rep.Code != "" || string(rep.Data) != `echo:{"x":1}` {
		t.Fatalf("echo: %+v %v", rep, err)
	}
	rep, err = a.RequestCall(ctx, "b", CallRequest{Op: "fail", RoomID: "r"})
	if err != nil || rep.Code != "not_found" || rep.Message != "no call in room r" {
		t.Fatalf("fail: %+v %v", rep, err)
	}
	rep, err = a.RequestCall(ctx, "b", CallRequest{Op: "panic"})
	if err != nil || rep.Code != "internal" {
		t.Fatalf("panic: %+v %v", rep, err)
	}
	if rep, err = a.RequestCall(ctx, "b", CallRequest{Op: "echo"}); err != nil || string(rep.Data) != "echo:" {
		t.Fatalf("after a panic: %+v %v", rep, err)
	}
	if err := a.NotifyCall("b", CallRequest{Op: "disconnect", ConnID: "c1"}); err != nil {
		t.Fatal(err)
	}
	const frames = 200
	for i := range frames {
		if err := b.SendConn("a", "conn-9", fmt.Appendf(nil, "f%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "frames on a", func() bool { return len(ra.all()) == frames })
	for i, ev := range ra.all() {
		if want := fmt.Sprintf("conn:conn-9:f%d", i); ev != want {
			t.Fatalf("frame %d: %q, want %q", i, ev, want)
		}
	}
	waitFor(t, 5*time.Second, "the notice on b", func() bool { return len(rb.all()) == 5 })
	if got := strings.Join(rb.all(), "|"); got != `req:echo:a:r:c1:{"x":1}|req:fail:a:r::|req:panic:a:::|req:echo:a:::|req:disconnect:a::c1:` {
		t.Fatalf("b saw %s", got)
	}

	// b sends frames, then dies: a handles them before NodeDown(b).
	for i := range 50 {
		_ = b.SendConn("a", "conn-7", fmt.Appendf(nil, "g%d", i))
	}
	_ = b.nc.Flush()
	kill(b)
	waitFor(t, 10*time.Second, "NodeDown(b) on a", func() bool {
		evs := ra.all()
		return evs[len(evs)-1] == "down:b"
	})
	evs := ra.all()
	if len(evs) != frames+50+1 || evs[len(evs)-2] != "conn:conn-7:g49" {
		t.Fatalf("a saw %d events, the last %v", len(evs), evs[len(evs)-3:])
	}
	if _, err := a.RequestCall(ctx, "b", CallRequest{Op: "echo"}); !errors.Is(err, ErrMediaNodeUnreachable) {
		t.Fatalf("request to a dead node: %v", err)
	}
	if ra.concurrent.Load() != 0 || rb.concurrent.Load() != 0 {
		t.Fatal("the call handler was called concurrently")
	}
}
