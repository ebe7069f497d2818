package server_test

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/server/servertest"
)

// TestChatPresenceFloodCoalesced: a user flooding presence:update
// (issue 9 review: two toggling users cost 68% of a core with 500
// bystanders, each bystander getting one frame per toggle) reaches a
// bystander at most once per presence-update-interval, plus the first
// change at once, and the last value the bystander sees is the final
// state. The user's other connection gets every chosen status, in order;
// invisible never reaches the bystander, even mid-flood.
func TestChatPresenceFloodCoalesced(t *testing.T) {
	const interval = 200 * time.Millisecond
	for _, tc := range []struct {
		name      string
		toggle    [2]string // alternated, starting and ending with [0]
		finalSeen string    // what bob must see at the end
	}{
		{"dnd-online", [2]string{"dnd", "online"}, "dnd"},
		{"invisible-dnd", [2]string{"invisible", "dnd"}, "offline"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := servertest.Start(t, map[string]string{
				"PARLEY_PRESENCE_UPDATE_INTERVAL": interval.String(),
				"PARLEY_MSG_RATE":                 "100000", "PARLEY_MSG_BURST": "100000",
			})
			p := newParty(t, s)
			b := p.dial("bob")
			a1 := p.dial("alice") // bob: alice online
			a2 := p.dial("alice")

			frames, last := 0, "online"
			bobFrame := func(f protocol.Envelope) {
				t.Helper()
				if f.Type != protocol.TypePresenceUpdate || strings.Contains(string(f.Data), "invisible") {
					t.Fatalf("bob got %s %s", f.Type, f.Data)
				}
				var ev userEvent
				_ = json.Unmarshal(f.Data, &ev)
				if ev.UserID != "alice" {
					t.Fatalf("bob got %s", f.Data)
				}
				frames++
				last = ev.Presence
			}
			// Toggle in acked batches until bob has had several frames
			// mid-flood, so that the flood spans several intervals.
			start := time.Now()
			n := 0
			toggle := func() {
				a1.Request(protocol.TypePresenceUpdate, fmt.Sprint("f", n), map[string]any{"presence": tc.toggle[n%2]})
				n++
			}
			for frames < 4 {
				if n > 20000 {
					t.Fatalf("bob got %d frames for %d toggles over %v", frames, n, time.Since(start))
				}
				from := n
				for range 10 {
					toggle()
				}
				for i := from; i < n; i++ {
					expectAck(a1, fmt.Sprint("f", i))
				}
				for {
					f, ok := b.Next(time.Millisecond)
					if !ok {
						break
					}
					bobFrame(f)
				}
			}
			toggle() // odd count: the flood ends on toggle[0]
			expectAck(a1, fmt.Sprint("f", n-1))
			for i := range n {
				expectUserEvent(a2, protocol.TypePresenceUpdate, userEvent{UserID: "alice", Presence: tc.toggle[i%2]})
			}
			// Bob's frames until the trailing send is surely out: every
			// change is made (all acked), so at most one more frame can
			// come, within one interval.
			var end time.Time
			for {
				end = time.Now()
				f, ok := b.Next(3 * interval)
				if !ok {
					break
				}
				bobFrame(f)
			}
			// end is before the last (empty) wait: every frame came before it.
			bound := int(math.Ceil(float64(end.Sub(start))/float64(interval))) + 1
			t.Logf("%d toggles in %v: bob got %d frames (bound %d)", n, end.Sub(start), frames, bound)
			if frames > bound || frames >= n {
				t.Fatalf("bob got %d presence:update for %d toggles over %v (interval %v, bound %d)",
					frames, n, end.Sub(start), interval, bound)
			}
			if last != tc.finalSeen {
				t.Fatalf("bob last saw %q, want %q", last, tc.finalSeen)
			}
			if got := presenceOf(t, s, s.Token("bob", nil), "alice"); got["alice"] != tc.finalSeen {
				t.Fatalf("bob's REST view %v", got)
			}
			if got := presenceOf(t, s, s.Token("alice", nil), "alice"); got["alice"] != tc.toggle[0] {
				t.Fatalf("alice's own REST view %v", got)
			}
			quiet(a1, a2, b)
		})
	}
}

// TestChatPresenceCoalescedPerUser: with a long interval, a second change
// within it does not go out at once (it waits for the interval's end),
// while the user's own other connection gets it at once, and another
// user's first change (their connect) is not held back by it.
func TestChatPresenceCoalescedPerUser(t *testing.T) {
	s := servertest.Start(t, map[string]string{"PARLEY_PRESENCE_UPDATE_INTERVAL": "1m"})
	p := newParty(t, s)
	b := p.dial("bob")
	a1 := p.dial("alice") // the first change goes out at once: bob gets online
	a2 := p.dial("alice")
	a1.Request(protocol.TypePresenceUpdate, "d", map[string]any{"presence": "dnd"})
	expectAck(a1, "d")
	expectUserEvent(a2, protocol.TypePresenceUpdate, userEvent{UserID: "alice", Presence: "dnd"})
	quiet(b)             // held for the end of the minute
	c := p.dial("carol") // alice and bob get carol online at once
	a1.Request(protocol.TypePresenceUpdate, "o", map[string]any{"presence": "online"})
	expectAck(a1, "o")
	expectUserEvent(a2, protocol.TypePresenceUpdate, userEvent{UserID: "alice", Presence: "online"})
	quiet(a1, a2, b, c)
}
