package server

import (
	"io"
	"log/slog"
	"sync"
	"testing"

	"github.com/parleyhq/parley/internal/hub"
	"github.com/parleyhq/parley/internal/media"
	"github.com/parleyhq/parley/internal/protocol"
)

// recConn is a hub connection that records the frames it is sent.
type recConn struct {
	id     string
	mu     sync.Mutex
	frames []string
}

func (c *recConn) ID() string     { return c.id }
func (c *recConn) UserID() string { return "u-" + c.id }
func (c *recConn) Send(f []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.frames = append(c.frames, string(f))
	return true
}

func (c *recConn) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.frames)
}

func roomClosed(room string) []byte {
	return protocol.Encode(media.TypeRoomClosed, "", map[string]string{"room_id": room})
}

// A media node that drains sends its participants media:room_closed
// itself, and the caller's node sends one from NodeDown for every
// connection still in a call there. CI once saw a client get both when
// the media node's frame came after the node-down notice
// (TestClusterCallMediaNodeDrains): each connection must be told once per
// call, in either order, and a later call on another node must still be
// closed normally.
func TestRoomClosedOncePerCallWhateverTheOrder(t *testing.T) {
	s := &Server{Hub: hub.New()}
	r := newCallRelay(s, slog.New(slog.NewTextHandler(io.Discard, nil)))
	a, b := &recConn{id: "a"}, &recConn{id: "b"}
	s.Hub.Add(a)
	s.Hub.Add(b)
	r.track("a", "m1", "room", true)
	r.track("b", "m1", "room", true)

	// a: the media node's frame first, then the node-down notice.
	r.ConnFrame("a", roomClosed("room"))
	// b: the node-down notice first, then the media node's frame.
	_, closes := r.forgetNode("m1")
	if len(closes) != 1 || closes[0] != (connRoom{"b", "room"}) {
		t.Fatalf("node down closes %v, want only b's call (a was told already)", closes)
	}
	s.Hub.SendToConn("b", roomClosed("room")) // what NodeDown sends
	r.ConnFrame("b", roomClosed("room"))
	if a.count() != 1 || b.count() != 1 {
		t.Fatalf("room_closed delivered %d times to a, %d to b; want once each", a.count(), b.count())
	}

	// b joins the call again on another media node, which closes it
	// later: that room_closed is delivered.
	r.track("b", "m2", "room", true)
	r.ConnFrame("b", roomClosed("room"))
	if b.count() != 2 {
		t.Fatalf("room_closed of the rejoined call: b got %d frames, want 2", b.count())
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.toldClosed) != 0 || len(r.inCall) != 0 {
		t.Fatalf("bookkeeping left: toldClosed %v, inCall %v", r.toldClosed, r.inCall)
	}
}
