package access_test

import (
	"context"
	"errors"
	"testing"

	"github.com/parleyhq/parley/internal/access"
	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/store"
)

// records is an in-memory access.Records.
type records struct {
	rooms   map[string]store.Room
	members map[string][]string
	err     error
}

func (r *records) GetRoom(_ context.Context, id string) (store.Room, error) {
	if r.err != nil {
		return store.Room{}, r.err
	}
	room, ok := r.rooms[id]
	if !ok {
		return store.Room{}, store.ErrNotFound
	}
	return room, nil
}

func (r *records) IsMember(_ context.Context, roomID, userID string) (bool, error) {
	for _, m := range r.members[roomID] {
		if m == userID {
			return true, nil
		}
	}
	return false, nil
}

func fixture() *records {
	return &records{
		rooms: map[string]store.Room{
			"priv": {ID: "priv", OwnerID: "owner"},
			"open": {ID: "open", Open: true, OwnerID: "owner"},
		},
		members: map[string][]string{"priv": {"owner", "member"}, "open": {"owner"}},
	}
}

func user(id string, grants map[string]auth.Perm) access.Subject {
	return access.User(&auth.Claims{UserID: id, Rooms: grants})
}

// TestGrantsTable is the policy table of the package documentation, row by
// row.
func TestGrantsTable(t *testing.T) {
	const (
		R, P, W, C, K, M, J = access.Read, access.Presence, access.Write, access.Chat, access.Call, access.Moderate, access.Join
	)
	cases := []struct {
		name string
		dev  bool
		sub  access.Subject
		room string
		want access.Set
	}{
		{"API key, record", false, access.Key(), "priv", R | W | M},
		{"API key, no record", false, access.Key(), "nope", R | W},
		{"owner", false, user("owner", nil), "priv", R | P | W | C | K | M | J},
		{"member", false, user("member", nil), "priv", R | P | W | C | K | J},
		{"stranger, private", false, user("eve", nil), "priv", 0},
		{"stranger, open", false, user("eve", nil), "open", R | P | W | J},
		{"stranger, unknown", false, user("eve", nil), "nope", 0},
		{"grant read", false, user("g", map[string]auth.Perm{"priv": auth.PermRead}), "priv", R},
		{"grant write-only", false, user("g", map[string]auth.Perm{"p*": auth.PermWrite}), "priv", W},
		{"grant presence-only", false, user("g", map[string]auth.Perm{"*": auth.PermPresence}), "priv", P},
		{"grant on a grant-only room", false, user("g", map[string]auth.Perm{"doc": auth.PermAll}), "doc", R | P | W},
		{"grant for another room", false, user("g", map[string]auth.Perm{"other": auth.PermAll}), "priv", 0},
		{"dev, stranger", true, user("eve", nil), "priv", R | P | W | K},
		{"dev, member", true, user("member", nil), "priv", R | P | W | C | K | J},
		{"dev, unknown", true, user("eve", nil), "nope", R | P | W | K},
		{"membership without claims", false, access.Subject{UserID: "member"}, "priv", R | P | W | C | K | J},
	}
	for _, tc := range cases {
		p := &access.Policy{Dev: tc.dev, Records: fixture()}
		got, err := p.Grants(context.Background(), tc.sub, tc.room)
		if err != nil || got != tc.want {
			t.Errorf("%s: %v %v, want %v", tc.name, got, err, tc.want)
		}
		// GrantsOf is Grants restricted to what was asked, whichever
		// way it answers (from the token alone or from the store).
		for _, want := range []access.Set{access.Read | access.Presence | access.Write, access.Read, access.Chat | access.Call, ^access.Set(0) &^ access.Create} {
			if g, err := p.GrantsOf(context.Background(), tc.sub, tc.room, want); err != nil || g != got&want {
				t.Errorf("%s: GrantsOf(%v) = %v %v, want %v", tc.name, want, g, err, got&want)
			}
		}
	}
}

// TestGrantsOfReadsStoreOnlyWhenNeeded: GrantsOf answers from the token
// and dev mode alone when they hold every action asked for (a broken
// store is then never seen), and asks the store otherwise.
func TestGrantsOfReadsStoreOnlyWhenNeeded(t *testing.T) {
	const R, P, W, K = access.Read, access.Presence, access.Write, access.Call
	broken := &records{err: errors.New("store down")}
	for _, tc := range []struct {
		dev     bool
		sub     access.Subject
		want    access.Set
		got     access.Set
		readsDB bool
	}{
		{false, user("g", map[string]auth.Perm{"*": auth.PermAll}), R | P | W, R | P | W, false},
		{false, user("g", map[string]auth.Perm{"*": auth.PermAll}), R | P | W | access.Chat, 0, true},
		{false, user("g", map[string]auth.Perm{"priv": auth.PermRead}), R, R, false},
		{false, user("g", map[string]auth.Perm{"priv": auth.PermRead}), R | P | W, 0, true},
		{false, user("member", nil), R, 0, true},
		{true, user("eve", nil), R | P | W | K, R | P | W | K, false},
		{false, access.Key(), R | W, R | W, false},
		{false, access.Key(), access.Moderate, 0, true},
	} {
		p := &access.Policy{Dev: tc.dev, Records: broken}
		got, err := p.GrantsOf(context.Background(), tc.sub, "priv", tc.want)
		if tc.readsDB != (err != nil) || got != tc.got {
			t.Errorf("dev %v, %+v, want %v: GrantsOf = %v, %v; want %v and a store read: %v", tc.dev, tc.sub, tc.want, got, err, tc.got, tc.readsDB)
		}
	}
}

// TestDecideRefusals: the refusal a subject gets; a room it may not see
// answers like an unknown room.
func TestDecideRefusals(t *testing.T) {
	p := &access.Policy{Records: fixture()}
	ctx := context.Background()
	cases := []struct {
		name string
		sub  access.Subject
		room string
		a    access.Action
		code string // "" = allowed
		msg  string
	}{
		{"stranger private", user("eve", nil), "priv", access.Read, protocol.CodeForbidden, "no access to room priv"},
		{"stranger unknown", user("eve", nil), "nope", access.Read, protocol.CodeForbidden, "no access to room nope"},
		{"stranger chat private", user("eve", nil), "priv", access.Chat, protocol.CodeForbidden, "no access to room priv"},
		{"stranger chat unknown", user("eve", nil), "nope", access.Chat, protocol.CodeForbidden, "no access to room nope"},
		{"write-only reads", user("g", map[string]auth.Perm{"priv": auth.PermWrite}), "priv", access.Read, protocol.CodeForbidden, "no access to room priv"},
		{"write-only writes", user("g", map[string]auth.Perm{"priv": auth.PermWrite}), "priv", access.Write, "", ""},
		{"reader writes", user("g", map[string]auth.Perm{"priv": auth.PermRead}), "priv", access.Write, protocol.CodeForbidden, "no write permission in room priv"},
		{"reader chats", user("g", map[string]auth.Perm{"priv": auth.PermRead}), "priv", access.Chat, protocol.CodeForbidden, "only members of room priv may chat there; join it first"},
		{"open visitor chats", user("eve", nil), "open", access.Chat, protocol.CodeForbidden, "only members of room open may chat there; join it first"},
		{"open visitor joins", user("eve", nil), "open", access.Join, "", ""},
		{"reader joins private", user("g", map[string]auth.Perm{"priv": auth.PermRead}), "priv", access.Join, protocol.CodeForbidden, "room priv is not open; ask its owner to add you"},
		{"grant holder chats, no record", user("g", map[string]auth.Perm{"doc": auth.PermAll}), "doc", access.Chat, protocol.CodeNotFound, "no room doc"},
		{"member moderates", user("member", nil), "priv", access.Moderate, protocol.CodeForbidden, "only the owner of room priv may manage its members"},
		{"owner moderates", user("owner", nil), "priv", access.Moderate, "", ""},
		{"key chats", access.Key(), "priv", access.Chat, protocol.CodeForbidden, "chat in room priv needs a user token, not the API key"},
		{"key moderates unknown", access.Key(), "nope", access.Moderate, protocol.CodeNotFound, "no room nope"},
		{"member read+write", user("member", nil), "priv", access.Read | access.Write, "", ""},
	}
	for _, tc := range cases {
		err := p.Decide(ctx, tc.sub, tc.room, tc.a)
		if tc.code == "" {
			if err != nil {
				t.Errorf("%s: %v, want allowed", tc.name, err)
			}
			continue
		}
		var pe *protocol.Error
		if !errors.As(err, &pe) || pe.Code != tc.code || pe.Message != tc.msg {
			t.Errorf("%s: %v, want %s %q", tc.name, err, tc.code, tc.msg)
		}
	}
}

// TestDecideCreate: an id with state anywhere is taken for users (409),
// not for the API key; a record is taken for everyone; probe failures are
// errors, not permissions.
func TestDecideCreate(t *testing.T) {
	state := map[string]bool{"grant-doc": true}
	probeErr := error(nil)
	p := &access.Policy{Records: fixture(), State: []access.StateProbe{
		access.StateFunc(func(_ context.Context, id string) (bool, error) { return false, nil }),
		access.StateFunc(func(_ context.Context, id string) (bool, error) { return state[id], probeErr }),
	}}
	ctx := context.Background()
	code := func(err error) string {
		if err == nil {
			return ""
		}
		var pe *protocol.Error
		if errors.As(err, &pe) {
			return pe.Code
		}
		return "error"
	}
	full := user("g", map[string]auth.Perm{"grant-doc": auth.PermAll})
	for _, tc := range []struct {
		name string
		sub  access.Subject
		id   string
		want string
	}{
		{"user, free id", user("eve", nil), "fresh", ""},
		{"user, id with state", user("eve", nil), "grant-doc", protocol.CodeConflict},
		{"grant holder, id with state", full, "grant-doc", protocol.CodeConflict},
		{"user, record", user("owner", nil), "priv", protocol.CodeConflict},
		{"key, id with state", access.Key(), "grant-doc", ""},
		{"key, record", access.Key(), "priv", protocol.CodeConflict},
	} {
		if got := code(p.Decide(ctx, tc.sub, tc.id, access.Create)); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	probeErr = errors.New("disk on fire")
	if got := code(p.Decide(ctx, user("eve", nil), "fresh", access.Create)); got != "error" {
		t.Errorf("probe failure: %q, want a non-protocol error", got)
	}
	// A store failure is an error, never a permission.
	bad := &access.Policy{Records: &records{err: errors.New("db down")}}
	if set, err := bad.Grants(ctx, user("owner", nil), "priv"); err == nil || set != 0 {
		t.Errorf("store failure: %v %v", set, err)
	}
}
