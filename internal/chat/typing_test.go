package chat

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/hub"
	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/store"
)

// fakeStore answers the membership questions typing asks: every room
// "room-N" has the members "u-N-*" listed in members.
type fakeStore struct {
	store.Store // methods typing does not use panic (nil interface)
	members     map[string][]string
}

func (f *fakeStore) IsMember(_ context.Context, roomID, userID string) (bool, error) {
	for _, m := range f.members[roomID] {
		if m == userID {
			return true, nil
		}
	}
	return false, nil
}

func (f *fakeStore) Members(_ context.Context, roomID string) ([]string, error) {
	return append([]string(nil), f.members[roomID]...), nil
}

func (f *fakeStore) GetRoom(_ context.Context, id string) (store.Room, error) {
	if _, ok := f.members[id]; ok {
		return store.Room{ID: id}, nil
	}
	return store.Room{}, store.ErrNotFound
}

// recordingBroker keeps every user-targeted frame.
type recordingBroker struct {
	mu     sync.Mutex
	frames []sent
}

type sent struct {
	users []string
	env   protocol.Envelope
}

func (b *recordingBroker) ToConn(string, []byte) {}
func (b *recordingBroker) ToUsers(users []string, frame []byte, _ string) {
	var env protocol.Envelope
	_ = json.Unmarshal(frame, &env)
	b.mu.Lock()
	b.frames = append(b.frames, sent{users: append([]string(nil), users...), env: env})
	b.mu.Unlock()
}
func (b *recordingBroker) ToAll([]byte, string) {}
func (b *recordingBroker) Close() error         { return nil }

func (b *recordingBroker) count(typ string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, f := range b.frames {
		if f.env.Type == typ {
			n++
		}
	}
	return n
}

// fakeSession is a connection as the handler sees it.
type fakeSession struct {
	id, user string
	mu       sync.Mutex
	replies  []string
}

func (s *fakeSession) ID() string                         { return s.id }
func (s *fakeSession) UserID() string                     { return s.user }
func (s *fakeSession) Send([]byte) bool                   { return true }
func (s *fakeSession) Name() string                       { return "" }
func (s *fakeSession) Claims() *auth.Claims               { return &auth.Claims{UserID: s.user} }
func (s *fakeSession) Done() <-chan struct{}              { return nil }
func (s *fakeSession) ReplyError(string, *protocol.Error) {}
func (s *fakeSession) Reply(typ, id string, _ any) {
	s.mu.Lock()
	s.replies = append(s.replies, typ+"/"+id)
	s.mu.Unlock()
}

// TestTypingThousandsExpireWithoutGoroutines: 3000 users typing in 1000
// rooms expire through the one expiry goroutine, each with exactly one
// typing:stop to the other members, and renewals re-broadcast nothing.
func TestTypingThousandsExpireWithoutGoroutines(t *testing.T) {
	const rooms, perRoom = 1000, 3
	st := &fakeStore{members: map[string][]string{}}
	var sessions []*fakeSession
	for r := range rooms {
		room := fmt.Sprint("room-", r)
		for u := range perRoom {
			user := fmt.Sprintf("u-%d-%d", r, u)
			st.members[room] = append(st.members[room], user)
			sessions = append(sessions, &fakeSession{id: "c-" + user, user: user})
		}
	}
	br := &recordingBroker{}
	svc := New(Options{Store: st, Broker: br, Hub: hub.New(), Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		TypingTimeout: 3 * time.Second}) // longer than 6000 requests take under -race
	svc.Start()
	defer svc.Close()

	before := runtime.NumGoroutine()
	ctx := context.Background()
	start := func(s *fakeSession, id string) {
		t.Helper()
		room := "room-" + s.user[2:len(s.user)-2]
		data, _ := json.Marshal(map[string]string{"room_id": room})
		if err := svc.Handle(ctx, s, protocol.Envelope{Type: protocol.TypeTypingStart, ID: id, Data: data}); err != nil {
			t.Fatalf("%s typing:start: %v", s.user, err)
		}
	}
	for _, s := range sessions {
		start(s, "s")
	}
	for _, s := range sessions {
		start(s, "") // renewal
	}
	if got := svc.TypingActive(); got != rooms*perRoom {
		t.Fatalf("%d active typers, want %d", got, rooms*perRoom)
	}
	if n := runtime.NumGoroutine(); n > before+2 {
		t.Errorf("%d goroutines with %d typers, %d before: typing must not start goroutines", n, rooms*perRoom, before)
	}
	if got := br.count(protocol.TypeTypingStart); got != rooms*perRoom {
		t.Fatalf("%d typing:start frames, want %d (renewals are not re-broadcast)", got, rooms*perRoom)
	}
	deadline := time.Now().Add(10 * time.Second)
	for (svc.TypingActive() > 0 || br.count(protocol.TypeTypingStop) < rooms*perRoom) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := br.count(protocol.TypeTypingStop); got != rooms*perRoom {
		t.Fatalf("%d typing:stop frames, want %d", got, rooms*perRoom)
	}
	// Each stop names one typer and goes to the two other members.
	br.mu.Lock()
	seen := map[string]bool{}
	for _, f := range br.frames {
		if f.env.Type != protocol.TypeTypingStop {
			continue
		}
		var ev typingEvent
		_ = json.Unmarshal(f.env.Data, &ev)
		key := ev.RoomID + "/" + ev.UserID
		if seen[key] {
			t.Errorf("two typing:stop for %s", key)
		}
		seen[key] = true
		if len(f.users) != perRoom-1 {
			t.Errorf("typing:stop for %s went to %v", key, f.users)
		}
		for _, u := range f.users {
			if u == ev.UserID {
				t.Errorf("typing:stop for %s went to the typer", key)
			}
		}
	}
	br.mu.Unlock()
	// Replies: exactly one ack per request with an id.
	for _, s := range sessions[:5] {
		if len(s.replies) != 1 || s.replies[0] != "ack/s" {
			t.Errorf("%s replies %v", s.user, s.replies)
		}
	}
}

// TestTypingRefusedForNonMembers: a private room and an unknown one get the
// same refusal (no existence oracle, PROTOCOL.md v1.1 §7).
func TestTypingRefusedForNonMembers(t *testing.T) {
	st := &fakeStore{members: map[string][]string{"r": {"a", "b"}}}
	br := &recordingBroker{}
	svc := New(Options{Store: st, Broker: br, Hub: hub.New(), TypingTimeout: time.Minute,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	for _, tc := range []struct {
		room, code string
	}{{"r", protocol.CodeForbidden}, {"nope", protocol.CodeForbidden}, {"bad room", protocol.CodeBadRequest}} {
		data, _ := json.Marshal(map[string]string{"room_id": tc.room})
		err := svc.Handle(context.Background(), &fakeSession{id: "c", user: "x"},
			protocol.Envelope{Type: protocol.TypeTypingStart, ID: "1", Data: data})
		if pe := protocol.AsError(err); err == nil || pe.Code != tc.code {
			t.Errorf("room %q: err %v, want %s", tc.room, err, tc.code)
		}
	}
	if svc.TypingActive() != 0 || len(br.frames) != 0 {
		t.Errorf("refusals left %d typers and sent %d frames", svc.TypingActive(), len(br.frames))
	}
}
