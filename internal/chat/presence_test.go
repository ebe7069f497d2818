package chat

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/hub"
	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/store"
)

// statusStore adds stored statuses and rooms-of-user to fakeStore.
type statusStore struct {
	fakeStore
	mu       sync.Mutex
	statuses map[string]string
}

func (f *statusStore) SetUserStatus(_ context.Context, user, status string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.statuses[user] = status
	return nil
}

func (f *statusStore) GetUserStatus(_ context.Context, user string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.statuses[user], nil
}

func (f *statusStore) RoomsOfUser(_ context.Context, user string) ([]store.Room, error) {
	var out []store.Room
	for id, ms := range f.members {
		for _, m := range ms {
			if m == user {
				out = append(out, store.Room{ID: id})
			}
		}
	}
	return out, nil
}

// presenceTo returns the presence values sent to user, in order, from
// frame index from on.
func (b *recordingBroker) presenceTo(user string, from int) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, f := range b.frames[from:] {
		if f.env.Type != protocol.TypePresenceUpdate {
			continue
		}
		for _, u := range f.users {
			if u == user {
				var ev PresenceEvent
				_ = json.Unmarshal(f.env.Data, &ev)
				out = append(out, ev.Presence)
			}
		}
	}
	return out
}

func (b *recordingBroker) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.frames)
}

// TestPresenceCoalescingStateMachine drives the per-user coalescing of
// what others see by hand (no expiry goroutines; the interval is an hour,
// and "the interval passed" is the flush timer fired by hand or the last
// send moved into the past): the first change after a quiet interval goes
// out at once, later ones wait for the end of the interval where the last
// value wins, a value back to what the others last saw sends nothing,
// invisible is only ever sent as offline to others while the user's own
// connections get every chosen status at once, and a user gone offline
// leaves no state behind.
func TestPresenceCoalescingStateMachine(t *testing.T) {
	st := &statusStore{fakeStore: fakeStore{members: map[string][]string{"r": {"alice", "bob"}}}, statuses: map[string]string{}}
	br := &recordingBroker{}
	svc := New(Options{Store: st, Broker: br, Hub: hub.New(), PresenceAudience: AudienceShared,
		PresenceUpdateInterval: time.Hour, PresenceOfflineGrace: time.Hour,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx := context.Background()
	a1 := &fakeSession{id: "a1", user: "alice"}
	set := func(status string) {
		t.Helper()
		data, _ := json.Marshal(map[string]string{"presence": status})
		if err := svc.Handle(ctx, a1, protocol.Envelope{Type: protocol.TypePresenceUpdate, Data: data}); err != nil {
			t.Fatalf("presence:update %s: %v", status, err)
		}
	}
	bobGot := func(step string, from int, want ...string) {
		t.Helper()
		got := br.presenceTo("bob", from)
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("%s: bob got %v, want %v", step, got, want)
		}
	}
	fireFlush := func() {
		t.Helper()
		for _, u := range svc.pres.flush.Expire(time.Now().Add(2 * time.Hour)) {
			svc.flushExpired(u)
		}
	}
	quietPassed := func() { // the last send to others is an interval old
		sh, ok := svc.pres.getShown("alice")
		if !ok {
			t.Fatal("no shown state for a connected user")
		}
		sh.at = sh.at.Add(-2 * time.Hour)
		svc.pres.setShown("alice", sh, true)
	}

	// Connecting: online at once.
	svc.Connected(a1, true)
	bobGot("connect", 0, StatusOnline)

	// Within the interval: nothing to bob; alice's own connections get
	// each status at once.
	n := br.len()
	set(StatusDND)
	set(StatusIdle)
	set(StatusOnline)
	bobGot("dnd, idle, online within the interval", n)
	if own := br.presenceTo("alice", n); strings.Join(own, ",") != "dnd,idle,online" {
		t.Fatalf("alice's own connections got %v", own)
	}
	// Back to what bob last saw: the trailing send sends nothing.
	fireFlush()
	bobGot("trailing send after a revert", n)

	// After a quiet interval: at once; then invisible/dnd toggles merge
	// into one trailing offline (never invisible).
	quietPassed()
	n = br.len()
	set(StatusIdle)
	bobGot("idle after quiet", n, StatusIdle)
	for range 50 {
		set(StatusInvisible)
		set(StatusDND)
	}
	set(StatusInvisible)
	bobGot("flood within the interval", n, StatusIdle)
	fireFlush()
	bobGot("trailing send after the flood", n, StatusIdle, StatusOffline)
	if own := br.presenceTo("alice", n); len(own) != 102 || own[101] != StatusInvisible {
		t.Fatalf("alice's own connections got %d statuses, last %q", len(own), own[len(own)-1])
	}
	// The trailing send started an interval: a change waits again.
	n = br.len()
	set(StatusOnline)
	bobGot("online right after the trailing send", n)
	fireFlush()
	bobGot("online at the end of the interval", n, StatusOnline)

	// Disconnecting within the interval: offline at its end, then the
	// user is forgotten.
	svc.Disconnected(a1, true)
	for _, u := range svc.pres.grace.Expire(time.Now().Add(2 * time.Hour)) {
		svc.graceExpired(u)
	}
	bobGot("offline within the interval", n, StatusOnline)
	fireFlush()
	bobGot("offline at the end of the interval", n, StatusOnline, StatusOffline)
	fireFlush() // the interval after the last send ends: forget
	svc.pres.mu.Lock()
	left := len(svc.pres.shown) + len(svc.pres.users)
	svc.pres.mu.Unlock()
	if left != 0 || svc.pres.flush.Len() != 0 || svc.pres.grace.Len() != 0 {
		t.Fatalf("state left for an offline user: %d entries, %d flush timers, %d grace timers",
			left, svc.pres.flush.Len(), svc.pres.grace.Len())
	}

	// Reconnecting after that: online at once.
	n = br.len()
	svc.Connected(a1, true)
	bobGot("reconnect", n, StatusOnline)

	// Connection churn (zero-length grace periods) within an interval:
	// nothing until its end, then one frame; forgetting a gone user waits
	// for the interval's end, so a reconnect cannot skip the wait.
	disconnect := func() {
		svc.Disconnected(a1, true)
		for _, u := range svc.pres.grace.Expire(time.Now().Add(2 * time.Hour)) {
			svc.graceExpired(u)
		}
	}
	n = br.len()
	for range 20 {
		disconnect()
		svc.Connected(a1, true)
	}
	disconnect()
	bobGot("churn within the interval", n)
	fireFlush()
	bobGot("churn: end of the interval", n, StatusOffline)
	for range 20 {
		svc.Connected(a1, true)
		disconnect()
	}
	svc.Connected(a1, true)
	bobGot("churn after the trailing send", n, StatusOffline)
	fireFlush()
	bobGot("churn: end of the second interval", n, StatusOffline, StatusOnline)
	for _, f := range br.frames {
		if strings.Contains(string(f.env.Data), StatusInvisible) && !(len(f.users) == 1 && f.users[0] == "alice") {
			t.Fatalf("invisible sent to %v", f.users)
		}
	}
}
