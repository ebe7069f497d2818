// Package storetest is the conformance suite every store.Store
// implementation passes (Run), and benchmarks shared by the implementations
// (BenchAppendSingle, BenchCommitterParallel).
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/internal/store"
)

// Run runs the conformance suite. open must return a new, empty store for
// the (sub)test it is given and close it in t.Cleanup.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"DocumentEmpty", testDocumentEmpty},
		{"DocumentAppendLoad", testDocumentAppendLoad},
		{"DocumentSnapshotTrim", testDocumentSnapshotTrim},
		{"DocumentConflict", testDocumentConflict},
		{"DocumentConcurrentAppend", testDocumentConcurrentAppend},
		{"FenceEpochZero", testFenceEpochZero},
		{"FenceRaise", testFenceRaise},
		{"AppendEpochStale", testAppendEpochStale},
		{"EpochPerRoom", testEpochPerRoom},
		{"FencedCallWritesNothing", testFencedCallWritesNothing},
		{"EpochsWithinCall", testEpochsWithinCall},
		{"EpochTooLarge", testEpochTooLarge},
		{"FenceConcurrentAppend", testFenceConcurrentAppend},
		{"Claim", testClaim},
		{"Users", testUsers},
		{"RefreshTokens", testRefreshTokens},
		{"RefreshTokenSweep", testRefreshTokenSweep},
		{"RefreshTokenConsumeRace", testRefreshTokenConsumeRace},
		{"UserStatus", testUserStatus},
		{"RoomsAndMembers", testRoomsAndMembers},
		{"Messages", testMessages},
		{"MessagePagination", testMessagePagination},
		{"Ping", testPing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, open(t))
		})
	}
}

// base is a time with millisecond precision in a non-UTC zone: stores must
// keep at least milliseconds and hand back UTC.
var base = time.Date(2025, 3, 14, 15, 9, 26, 535_000_000, time.FixedZone("UTC+5", 5*3600))

func ctx(t *testing.T) context.Context { return t.Context() }

func checkTime(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	if !got.Equal(want) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
	if got.Location() != time.UTC {
		t.Errorf("%s location = %v, want UTC", what, got.Location())
	}
}

func checkNullTime(t *testing.T, what string, got, want *time.Time) {
	t.Helper()
	switch {
	case got == nil && want == nil:
	case got == nil || want == nil:
		t.Errorf("%s = %v, want %v", what, got, want)
	default:
		checkTime(t, what, *got, *want)
	}
}

func upd(room string, v int64, client string) store.DocUpdate {
	return store.DocUpdate{
		RoomID:   room,
		Version:  v,
		ClientID: client,
		Ops:      json.RawMessage(fmt.Sprintf(`[{"op":"add","path":"/k%d","value":%d}]`, v, v)),
	}
}

func versions(us []store.DocUpdate) []int64 {
	vs := make([]int64, len(us))
	for i, u := range us {
		vs[i] = u.Version
	}
	return vs
}

func seq(from, to int64) []int64 {
	vs := []int64{}
	for v := from; v <= to; v++ {
		vs = append(vs, v)
	}
	return vs
}

func mustAppend(t *testing.T, s store.Store, us ...store.DocUpdate) {
	t.Helper()
	if err := s.AppendUpdates(ctx(t), us); err != nil {
		t.Fatalf("AppendUpdates(%v): %v", versions(us), err)
	}
}

func load(t *testing.T, s store.Store, room string) store.Document {
	t.Helper()
	doc, err := s.LoadDocument(ctx(t), room)
	if err != nil {
		t.Fatalf("LoadDocument(%q): %v", room, err)
	}
	return doc
}

// checkUpdates compares updates field by field; ops byte for byte.
func checkUpdates(t *testing.T, what string, got, want []store.DocUpdate) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: versions %v, want %v", what, versions(got), versions(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.RoomID != w.RoomID || g.Version != w.Version || g.ClientID != w.ClientID || string(g.Ops) != string(w.Ops) {
			t.Errorf("%s[%d] = {%q %d %q %s}, want {%q %d %q %s}", what, i,
				g.RoomID, g.Version, g.ClientID, g.Ops, w.RoomID, w.Version, w.ClientID, w.Ops)
		}
		if g.Snapshot != nil {
			t.Errorf("%s[%d].Snapshot = %s, want nil", what, i, g.Snapshot)
		}
	}
}

func testDocumentEmpty(t *testing.T, s store.Store) {
	doc := load(t, s, "empty")
	if doc.Version != 0 || string(doc.Data) != "{}" || len(doc.Updates) != 0 {
		t.Fatalf("LoadDocument(never written) = {%d %s %v}, want {0 {} []}", doc.Version, doc.Data, versions(doc.Updates))
	}
	us, ok, err := s.UpdatesSince(ctx(t), "empty", 0)
	if err != nil || !ok || len(us) != 0 {
		t.Errorf("UpdatesSince(empty, 0) = %v, %v, %v; want [], true, nil", versions(us), ok, err)
	}
	if _, ok, err := s.UpdatesSince(ctx(t), "empty", 1); err != nil || ok {
		t.Errorf("UpdatesSince(empty, 1) ok = %v, %v; want false, nil", ok, err)
	}
}

func testDocumentAppendLoad(t *testing.T, s store.Store) {
	a1, a2, a3 := upd("a", 1, "c1"), upd("a", 2, "c2"), upd("a", 3, "c1")
	b1 := upd("b", 1, "c9")
	// Ops are kept byte for byte, whitespace and key order included.
	a2.Ops = json.RawMessage(`[ {"path": "/z", "op": "remove"} ]`)
	empty := upd("b", 2, "c9")
	empty.Ops = nil // stored and returned as JSON null

	mustAppend(t, s, a1, b1, a2)
	mustAppend(t, s, a3, empty)

	doc := load(t, s, "a")
	if doc.Version != 0 || string(doc.Data) != "{}" {
		t.Errorf("LoadDocument(a) = version %d data %s, want 0 {}", doc.Version, doc.Data)
	}
	checkUpdates(t, "LoadDocument(a).Updates", doc.Updates, []store.DocUpdate{a1, a2, a3})
	empty.Ops = json.RawMessage("null")
	checkUpdates(t, "LoadDocument(b).Updates", load(t, s, "b").Updates, []store.DocUpdate{b1, empty})

	for _, tc := range []struct {
		since int64
		want  []store.DocUpdate
	}{
		{0, []store.DocUpdate{a1, a2, a3}},
		{1, []store.DocUpdate{a2, a3}},
		{2, []store.DocUpdate{a3}},
		{3, []store.DocUpdate{}},
	} {
		us, ok, err := s.UpdatesSince(ctx(t), "a", tc.since)
		if err != nil || !ok {
			t.Fatalf("UpdatesSince(a, %d) = ok %v, err %v", tc.since, ok, err)
		}
		if us == nil {
			t.Errorf("UpdatesSince(a, %d) returned a nil slice", tc.since)
		}
		checkUpdates(t, fmt.Sprintf("UpdatesSince(a, %d)", tc.since), us, tc.want)
	}
	if _, ok, err := s.UpdatesSince(ctx(t), "a", 4); err != nil || ok {
		t.Errorf("UpdatesSince(a, 4) ok = %v, %v; want false (ahead of the room)", ok, err)
	}
}

func testDocumentSnapshotTrim(t *testing.T, s store.Store) {
	const room = "snap"
	for v := int64(1); v <= 10; v++ {
		mustAppend(t, s, upd(room, v, "c"))
	}
	// Snapshot at 11 keeping 3: updates <= 8 go, 9..11 stay.
	u11 := upd(room, 11, "c")
	u11.Snapshot, u11.KeepUpdates = json.RawMessage(`{"n": 11}`), 3
	mustAppend(t, s, u11)
	doc := load(t, s, room)
	if doc.Version != 11 || string(doc.Data) != `{"n": 11}` || len(doc.Updates) != 0 {
		t.Fatalf("after snapshot: LoadDocument = {%d %s %v}, want {11 {\"n\": 11} []}", doc.Version, doc.Data, versions(doc.Updates))
	}
	mustAppend(t, s, upd(room, 12, "c"))
	doc = load(t, s, room)
	if doc.Version != 11 {
		t.Errorf("LoadDocument.Version = %d, want 11", doc.Version)
	}
	checkUpdates(t, "LoadDocument.Updates", doc.Updates, []store.DocUpdate{upd(room, 12, "c")})

	for _, tc := range []struct {
		since int64
		ok    bool
		want  []int64
	}{
		{-1, false, nil},
		{0, false, nil},
		{7, false, nil}, // 8 was trimmed
		{8, true, seq(9, 12)},
		{10, true, seq(11, 12)},
		{11, true, seq(12, 12)},
		{12, true, []int64{}}, // current version: ok, nothing missed
		{13, false, nil},      // ahead of the room
	} {
		us, ok, err := s.UpdatesSince(ctx(t), room, tc.since)
		if err != nil {
			t.Fatalf("UpdatesSince(%d): %v", tc.since, err)
		}
		if ok != tc.ok || (ok && !slices.Equal(versions(us), tc.want)) {
			t.Errorf("UpdatesSince(%d) = %v, %v; want %v, %v", tc.since, versions(us), ok, tc.want, tc.ok)
		}
		if ok && len(us) > 0 && us[0].RoomID != room {
			t.Errorf("UpdatesSince(%d)[0].RoomID = %q", tc.since, us[0].RoomID)
		}
	}

	// Versions at or below the snapshot, trimmed or not, were written: conflict.
	for _, v := range []int64{5, 10, 11, 12} {
		if err := s.AppendUpdates(ctx(t), []store.DocUpdate{upd(room, v, "x")}); !errors.Is(err, store.ErrConflict) {
			t.Errorf("re-append version %d: err = %v, want ErrConflict", v, err)
		}
	}

	// Snapshot keeping nothing, with later updates in the same batch.
	u13 := upd(room, 13, "c")
	u13.Snapshot = json.RawMessage(`{"n":13}`)
	mustAppend(t, s, u13, upd(room, 14, "c"))
	doc = load(t, s, room)
	if doc.Version != 13 || string(doc.Data) != `{"n":13}` {
		t.Errorf("LoadDocument = version %d data %s, want 13 {\"n\":13}", doc.Version, doc.Data)
	}
	checkUpdates(t, "LoadDocument.Updates", doc.Updates, []store.DocUpdate{upd(room, 14, "c")})
	if us, ok, err := s.UpdatesSince(ctx(t), room, 13); err != nil || !ok || !slices.Equal(versions(us), []int64{14}) {
		t.Errorf("UpdatesSince(13) = %v, %v, %v; want [14], true", versions(us), ok, err)
	}
	if _, ok, err := s.UpdatesSince(ctx(t), room, 12); err != nil || ok {
		t.Errorf("UpdatesSince(12) ok = %v, %v; want false", ok, err)
	}

	// A snapshot with every update trimmed: since == current is still ok.
	u15 := upd(room, 15, "c")
	u15.Snapshot = json.RawMessage(`{"n":15}`)
	mustAppend(t, s, u15)
	if us, ok, err := s.UpdatesSince(ctx(t), room, 15); err != nil || !ok || len(us) != 0 {
		t.Errorf("UpdatesSince(15) at snapshot 15 = %v, %v, %v; want [], true", versions(us), ok, err)
	}
	if _, ok, err := s.UpdatesSince(ctx(t), room, 14); err != nil || ok {
		t.Errorf("UpdatesSince(14) at snapshot 15 ok = %v, %v; want false", ok, err)
	}

	// Other rooms are untouched by trimming.
	mustAppend(t, s, upd("other", 1, "c"))
	u16 := upd(room, 16, "c")
	u16.Snapshot = json.RawMessage(`{}`)
	mustAppend(t, s, u16)
	checkUpdates(t, "other room", load(t, s, "other").Updates, []store.DocUpdate{upd("other", 1, "c")})
}

func testDocumentConflict(t *testing.T, s store.Store) {
	mustAppend(t, s, upd("c1", 1, "x"), upd("c2", 1, "x"))

	snap := upd("c2", 2, "x")
	snap.Snapshot = json.RawMessage(`{"v":2}`)
	for _, tc := range []struct {
		name  string
		batch []store.DocUpdate
	}{
		{"second update duplicates", []store.DocUpdate{upd("c2", 2, "x"), upd("c1", 1, "dup")}},
		{"snapshot then duplicate", []store.DocUpdate{snap, upd("c3", 1, "x"), upd("c1", 1, "dup")}},
		{"duplicate inside the batch", []store.DocUpdate{upd("c3", 1, "x"), upd("c3", 2, "x"), upd("c3", 1, "x")}},
		{"only a duplicate", []store.DocUpdate{upd("c2", 1, "dup")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.AppendUpdates(ctx(t), tc.batch)
			if !errors.Is(err, store.ErrConflict) {
				t.Fatalf("AppendUpdates = %v, want ErrConflict", err)
			}
			// Nothing of the batch was written.
			for _, room := range []string{"c1", "c2"} {
				doc := load(t, s, room)
				if doc.Version != 0 || string(doc.Data) != "{}" {
					t.Errorf("%s: snapshot version %d data %s, want 0 {}", room, doc.Version, doc.Data)
				}
				checkUpdates(t, room, doc.Updates, []store.DocUpdate{upd(room, 1, "x")})
			}
			if doc := load(t, s, "c3"); len(doc.Updates) != 0 {
				t.Errorf("c3 updates = %v, want none", versions(doc.Updates))
			}
		})
	}
	// The store is still usable after the failed transactions.
	mustAppend(t, s, upd("c2", 2, "x"), upd("c1", 2, "x"))
	if got := versions(load(t, s, "c1").Updates); !slices.Equal(got, []int64{1, 2}) {
		t.Errorf("c1 versions = %v, want [1 2]", got)
	}
}

func testDocumentConcurrentAppend(t *testing.T, s store.Store) {
	const (
		rooms   = 8
		perRoom = 40
	)
	var wg sync.WaitGroup
	for r := range rooms {
		wg.Go(func() {
			room := fmt.Sprintf("conc-%d", r)
			for v := int64(1); v <= perRoom; {
				// Batches of 1..3 updates.
				n := min(int64(1+(v+int64(r))%3), perRoom-v+1)
				batch := make([]store.DocUpdate, 0, n)
				for i := range n {
					batch = append(batch, upd(room, v+i, "c"))
				}
				if err := s.AppendUpdates(ctx(t), batch); err != nil {
					t.Errorf("%s: AppendUpdates(%v): %v", room, versions(batch), err)
					return
				}
				v += n
			}
		})
	}
	wg.Wait()
	for r := range rooms {
		room := fmt.Sprintf("conc-%d", r)
		if got := versions(load(t, s, room).Updates); !slices.Equal(got, seq(1, perRoom)) {
			t.Errorf("%s versions = %v, want 1..%d", room, got, perRoom)
		}
	}
}

func testUsers(t *testing.T, s store.Store) {
	alice := store.User{ID: "u-alice", Username: "Alice", DisplayName: "Alice A.", PasswordHash: "$argon2id$x", CreatedAt: base}
	if err := s.CreateUser(ctx(t), alice); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	check := func(what string, u store.User, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if u.ID != alice.ID || u.Username != alice.Username || u.DisplayName != alice.DisplayName || u.PasswordHash != alice.PasswordHash {
			t.Errorf("%s = %+v, want %+v", what, u, alice)
		}
		checkTime(t, what+".CreatedAt", u.CreatedAt, base)
	}
	for _, name := range []string{"Alice", "alice", "ALICE"} {
		u, err := s.UserByUsername(ctx(t), name)
		check("UserByUsername("+name+")", u, err)
	}
	u, err := s.UserByID(ctx(t), "u-alice")
	check("UserByID", u, err)

	for _, tc := range []struct {
		name string
		u    store.User
	}{
		{"same username other case", store.User{ID: "u-2", Username: "aLiCe", CreatedAt: base}},
		{"same id", store.User{ID: "u-alice", Username: "bob", CreatedAt: base}},
	} {
		if err := s.CreateUser(ctx(t), tc.u); !errors.Is(err, store.ErrConflict) {
			t.Errorf("CreateUser(%s) = %v, want ErrConflict", tc.name, err)
		}
	}
	if _, err := s.UserByUsername(ctx(t), "bob"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("UserByUsername(unknown) = %v, want ErrNotFound", err)
	}
	if _, err := s.UserByID(ctx(t), "u-2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("UserByID(unknown) = %v, want ErrNotFound", err)
	}
	if err := s.CreateUser(ctx(t), store.User{ID: "u-bob", Username: "Bob", CreatedAt: base}); err != nil {
		t.Errorf("CreateUser(bob): %v", err)
	}
}

func testRefreshTokens(t *testing.T, s store.Store) {
	now := base.Add(time.Hour)
	valid := store.RefreshToken{Hash: "h-valid", UserID: "u1", ExpiresAt: now.Add(time.Hour), CreatedAt: base}
	expired := store.RefreshToken{Hash: "h-expired", UserID: "u1", ExpiresAt: now.Add(-time.Second), CreatedAt: base}
	atNow := store.RefreshToken{Hash: "h-at-now", UserID: "u2", ExpiresAt: now, CreatedAt: base}
	for _, tok := range []store.RefreshToken{valid, expired, atNow} {
		if err := s.CreateRefreshToken(ctx(t), tok); err != nil {
			t.Fatalf("CreateRefreshToken(%s): %v", tok.Hash, err)
		}
	}
	if err := s.CreateRefreshToken(ctx(t), valid); !errors.Is(err, store.ErrConflict) {
		t.Errorf("CreateRefreshToken(duplicate) = %v, want ErrConflict", err)
	}

	got, err := s.ConsumeRefreshToken(ctx(t), "h-valid", now)
	if err != nil {
		t.Fatalf("ConsumeRefreshToken(valid): %v", err)
	}
	if got.Hash != valid.Hash || got.UserID != valid.UserID {
		t.Errorf("ConsumeRefreshToken = %+v, want %+v", got, valid)
	}
	checkTime(t, "ExpiresAt", got.ExpiresAt, valid.ExpiresAt)
	checkTime(t, "CreatedAt", got.CreatedAt, valid.CreatedAt)

	for _, tc := range []struct {
		name string
		hash string
		now  time.Time
	}{
		{"used", "h-valid", now},
		{"expired", "h-expired", now},
		{"expired, consumed", "h-expired", base}, // still valid at base: proves it was deleted
		{"expiring at now", "h-at-now", now},
		{"never issued", "h-nope", now},
	} {
		if _, err := s.ConsumeRefreshToken(ctx(t), tc.hash, tc.now); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("ConsumeRefreshToken(%s) = %v, want ErrNotFound", tc.name, err)
		}
	}
	// A used token is told apart from one never issued, with its owner, so
	// that the caller can revoke the owner's other tokens.
	got, err = s.ConsumeRefreshToken(ctx(t), "h-valid", now)
	if !errors.Is(err, store.ErrRefreshTokenReused) || got.UserID != "u1" {
		t.Errorf("reusing a token = %+v, %v; want ErrRefreshTokenReused with user u1", got, err)
	}
	if _, err := s.ConsumeRefreshToken(ctx(t), "h-nope", now); errors.Is(err, store.ErrRefreshTokenReused) {
		t.Errorf("a token never issued is reported as reused")
	}
	// Revoking a user's tokens leaves other users' alone.
	for _, tok := range []store.RefreshToken{
		{Hash: "r-1", UserID: "u7", ExpiresAt: now.Add(time.Hour), CreatedAt: base},
		{Hash: "r-2", UserID: "u7", ExpiresAt: now.Add(time.Hour), CreatedAt: base},
		{Hash: "r-3", UserID: "u8", ExpiresAt: now.Add(time.Hour), CreatedAt: base},
	} {
		if err := s.CreateRefreshToken(ctx(t), tok); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.RevokeRefreshTokens(ctx(t), "u7"); err != nil {
		t.Fatal(err)
	}
	// Deleting one token (logout) makes it unknown, not reused.
	if err := s.DeleteRefreshToken(ctx(t), "r-3"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRefreshToken(ctx(t), "never-issued"); err != nil {
		t.Errorf("deleting an unknown token: %v", err)
	}
	for hash, want := range map[string]bool{"r-1": false, "r-2": false, "r-3": false} {
		_, err := s.ConsumeRefreshToken(ctx(t), hash, now)
		if (err == nil) != want || (err != nil && errors.Is(err, store.ErrRefreshTokenReused)) {
			t.Errorf("after revoking u7, consume %s = %v", hash, err)
		}
	}
}

func testRefreshTokenSweep(t *testing.T, s store.Store) {
	now := base.Add(time.Hour)
	for i, exp := range []time.Time{now.Add(-time.Minute), now.Add(-time.Millisecond), now, now.Add(time.Minute)} {
		tok := store.RefreshToken{Hash: fmt.Sprintf("sweep-%d", i), UserID: "u", ExpiresAt: exp, CreatedAt: base}
		if err := s.CreateRefreshToken(ctx(t), tok); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.DeleteExpiredRefreshTokens(ctx(t), now)
	if err != nil || n != 3 {
		t.Fatalf("DeleteExpiredRefreshTokens = %d, %v; want 3", n, err)
	}
	// The one still valid survives and can be consumed once.
	if _, err := s.ConsumeRefreshToken(ctx(t), "sweep-3", now); err != nil {
		t.Fatalf("valid token after the sweep: %v", err)
	}
	if n, err := s.DeleteExpiredRefreshTokens(ctx(t), now); err != nil || n != 0 {
		t.Fatalf("second sweep = %d, %v", n, err)
	}
}

func testRefreshTokenConsumeRace(t *testing.T, s store.Store) {
	now := base
	if err := s.CreateRefreshToken(ctx(t), store.RefreshToken{Hash: "h", UserID: "u", ExpiresAt: now.Add(time.Hour), CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		success int
	)
	for range 8 {
		wg.Go(func() {
			_, err := s.ConsumeRefreshToken(ctx(t), "h", now)
			switch {
			case err == nil:
				mu.Lock()
				success++
				mu.Unlock()
			case !errors.Is(err, store.ErrNotFound):
				t.Errorf("ConsumeRefreshToken: %v", err)
			}
		})
	}
	wg.Wait()
	if success != 1 {
		t.Errorf("%d concurrent consumes succeeded, want exactly 1", success)
	}
}

func testUserStatus(t *testing.T, s store.Store) {
	if st, err := s.GetUserStatus(ctx(t), "minted-user"); err != nil || st != "" {
		t.Errorf("GetUserStatus(never set) = %q, %v; want \"\"", st, err)
	}
	// The user has no users row (backend-minted token): that is fine.
	for _, status := range []string{"dnd", "invisible", "online"} {
		if err := s.SetUserStatus(ctx(t), "minted-user", status); err != nil {
			t.Fatalf("SetUserStatus(%s): %v", status, err)
		}
		if st, err := s.GetUserStatus(ctx(t), "minted-user"); err != nil || st != status {
			t.Errorf("GetUserStatus = %q, %v; want %q", st, err, status)
		}
	}
	if st, _ := s.GetUserStatus(ctx(t), "other"); st != "" {
		t.Errorf("GetUserStatus(other) = %q, want \"\"", st)
	}
}

func testRoomsAndMembers(t *testing.T, s store.Store) {
	rooms := []store.Room{
		{ID: "r-late", Name: "Late", Open: false, OwnerID: "u1", CreatedAt: base.Add(2 * time.Minute)},
		{ID: "r-b", Name: "B", Open: true, OwnerID: "u1", CreatedAt: base},
		{ID: "r-a", Name: "A", Open: false, OwnerID: "u1", CreatedAt: base}, // same time as r-b: id breaks the tie
		{ID: "r-early", Name: "Early", Open: true, OwnerID: "u2", CreatedAt: base.Add(-time.Minute)},
	}
	for _, r := range rooms {
		if err := s.CreateRoom(ctx(t), r); err != nil {
			t.Fatalf("CreateRoom(%s): %v", r.ID, err)
		}
	}
	if err := s.CreateRoom(ctx(t), store.Room{ID: "r-a", Name: "again", OwnerID: "u9", CreatedAt: base}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("CreateRoom(existing id) = %v, want ErrConflict", err)
	}
	if ok, _ := s.IsMember(ctx(t), "r-a", "u9"); ok {
		t.Errorf("a refused CreateRoom added its owner as member")
	}
	checkRoom := func(what string, got, want store.Room) {
		t.Helper()
		if got.ID != want.ID || got.Name != want.Name || got.Open != want.Open || got.OwnerID != want.OwnerID {
			t.Errorf("%s = %+v, want %+v", what, got, want)
		}
		checkTime(t, what+".CreatedAt", got.CreatedAt, want.CreatedAt)
	}
	for _, r := range rooms {
		got, err := s.GetRoom(ctx(t), r.ID)
		if err != nil {
			t.Fatalf("GetRoom(%s): %v", r.ID, err)
		}
		checkRoom("GetRoom("+r.ID+")", got, r)
	}
	if _, err := s.GetRoom(ctx(t), "r-nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetRoom(unknown) = %v, want ErrNotFound", err)
	}

	// The creator is a member.
	for _, r := range rooms {
		if ok, err := s.IsMember(ctx(t), r.ID, r.OwnerID); err != nil || !ok {
			t.Errorf("IsMember(%s, owner) = %v, %v; want true", r.ID, ok, err)
		}
	}
	// u1 joins r-early too; AddMember is idempotent.
	for range 2 {
		if err := s.AddMember(ctx(t), "r-early", "u1"); err != nil {
			t.Fatalf("AddMember: %v", err)
		}
		if err := s.AddMember(ctx(t), "r-early", "u0"); err != nil {
			t.Fatalf("AddMember: %v", err)
		}
	}
	if got, err := s.Members(ctx(t), "r-early"); err != nil || !slices.Equal(got, []string{"u0", "u1", "u2"}) {
		t.Errorf("Members(r-early) = %v, %v; want [u0 u1 u2]", got, err)
	}
	got, err := s.RoomsOfUser(ctx(t), "u1")
	if err != nil {
		t.Fatalf("RoomsOfUser: %v", err)
	}
	want := []store.Room{rooms[3], rooms[2], rooms[1], rooms[0]} // created_at, then id
	if len(got) != len(want) {
		t.Fatalf("RoomsOfUser(u1) = %d rooms, want %d", len(got), len(want))
	}
	for i := range got {
		checkRoom(fmt.Sprintf("RoomsOfUser(u1)[%d]", i), got[i], want[i])
	}

	// RemoveMember is idempotent.
	for range 2 {
		if err := s.RemoveMember(ctx(t), "r-early", "u1"); err != nil {
			t.Fatalf("RemoveMember: %v", err)
		}
	}
	if ok, err := s.IsMember(ctx(t), "r-early", "u1"); err != nil || ok {
		t.Errorf("IsMember after remove = %v, %v; want false", ok, err)
	}
	if got, _ := s.Members(ctx(t), "r-early"); !slices.Equal(got, []string{"u0", "u2"}) {
		t.Errorf("Members(r-early) = %v, want [u0 u2]", got)
	}
	if got, _ := s.RoomsOfUser(ctx(t), "u1"); len(got) != 3 {
		t.Errorf("RoomsOfUser(u1) after leaving = %d rooms, want 3", len(got))
	}
	for _, who := range []string{"nobody"} {
		got, err := s.RoomsOfUser(ctx(t), who)
		if err != nil || got == nil || len(got) != 0 {
			t.Errorf("RoomsOfUser(%s) = %#v, %v; want empty non-nil", who, got, err)
		}
	}
	if got, err := s.Members(ctx(t), "r-nope"); err != nil || got == nil || len(got) != 0 {
		t.Errorf("Members(unknown) = %#v, %v; want empty non-nil", got, err)
	}
}

func newID(t *testing.T) string {
	t.Helper()
	id, err := uuid.NewV7()
	if err != nil {
		t.Fatal(err)
	}
	return id.String()
}

func checkMessage(t *testing.T, what string, got, want store.Message) {
	t.Helper()
	if got.ID != want.ID || got.RoomID != want.RoomID || got.AuthorID != want.AuthorID ||
		got.Content != want.Content || got.Nonce != want.Nonce {
		t.Errorf("%s = %+v, want %+v", what, got, want)
	}
	checkTime(t, what+".CreatedAt", got.CreatedAt, want.CreatedAt)
	checkNullTime(t, what+".UpdatedAt", got.UpdatedAt, want.UpdatedAt)
	checkNullTime(t, what+".DeletedAt", got.DeletedAt, want.DeletedAt)
}

func testMessages(t *testing.T, s store.Store) {
	m1 := store.Message{ID: newID(t), RoomID: "chat", AuthorID: "u1", Content: "hello", Nonce: "n-1", CreatedAt: base}
	m2 := store.Message{ID: newID(t), RoomID: "chat", AuthorID: "u2", Content: "héllo, wörld 👋", CreatedAt: base.Add(time.Millisecond)}
	for _, m := range []store.Message{m1, m2} {
		if err := s.CreateMessage(ctx(t), m); err != nil {
			t.Fatalf("CreateMessage: %v", err)
		}
	}
	if err := s.CreateMessage(ctx(t), m1); !errors.Is(err, store.ErrConflict) {
		t.Errorf("CreateMessage(duplicate id) = %v, want ErrConflict", err)
	}
	got, err := s.GetMessage(ctx(t), "chat", m1.ID)
	if err != nil {
		t.Fatalf("GetMessage: %v", err)
	}
	checkMessage(t, "GetMessage", got, m1)
	if _, err := s.GetMessage(ctx(t), "other-room", m1.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetMessage(wrong room) = %v, want ErrNotFound", err)
	}

	// Update.
	edited := base.Add(time.Minute)
	up, err := s.UpdateMessage(ctx(t), "chat", m1.ID, "hello, edited", edited)
	if err != nil {
		t.Fatalf("UpdateMessage: %v", err)
	}
	m1.Content, m1.UpdatedAt = "hello, edited", &edited
	checkMessage(t, "UpdateMessage", up, m1)
	got, _ = s.GetMessage(ctx(t), "chat", m1.ID)
	checkMessage(t, "GetMessage after update", got, m1)
	if _, err := s.UpdateMessage(ctx(t), "other-room", m1.ID, "x", edited); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("UpdateMessage(wrong room) = %v, want ErrNotFound", err)
	}

	// Soft delete.
	if err := s.DeleteMessage(ctx(t), "chat", m2.ID, edited); err != nil {
		t.Fatalf("DeleteMessage: %v", err)
	}
	if _, err := s.GetMessage(ctx(t), "chat", m2.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetMessage(deleted) = %v, want ErrNotFound", err)
	}
	if _, err := s.UpdateMessage(ctx(t), "chat", m2.ID, "x", edited); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("UpdateMessage(deleted) = %v, want ErrNotFound", err)
	}
	if err := s.DeleteMessage(ctx(t), "chat", m2.ID, edited); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeleteMessage(deleted) = %v, want ErrNotFound", err)
	}
	if err := s.DeleteMessage(ctx(t), "chat", "nope", edited); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeleteMessage(unknown) = %v, want ErrNotFound", err)
	}
	if err := s.CreateMessage(ctx(t), m2); !errors.Is(err, store.ErrConflict) {
		t.Errorf("CreateMessage(id of a deleted message) = %v, want ErrConflict", err)
	}
	list, err := s.ListMessages(ctx(t), "chat", "", 10)
	if err != nil {
		t.Fatalf("ListMessages: %v", err)
	}
	if len(list) != 1 {
		t.Fatalf("ListMessages = %d messages, want 1 (deleted one skipped)", len(list))
	}
	checkMessage(t, "ListMessages[0]", list[0], m1)
	if list, err := s.ListMessages(ctx(t), "chat", "", 0); err != nil || len(list) != 0 {
		t.Errorf("ListMessages(limit 0) = %d, %v; want 0", len(list), err)
	}
	if list, err := s.ListMessages(ctx(t), "empty-room", "", 10); err != nil || list == nil || len(list) != 0 {
		t.Errorf("ListMessages(empty room) = %#v, %v; want empty non-nil", list, err)
	}
}

func testMessagePagination(t *testing.T, s store.Store) {
	var all []store.Message
	for i := range 25 {
		m := store.Message{ID: newID(t), RoomID: "page", AuthorID: "u1", Content: fmt.Sprint("m", i), CreatedAt: base.Add(time.Duration(i) * time.Second)}
		all = append(all, m)
	}
	// Insert out of order; another room's messages must not leak in.
	for _, i := range []int{3, 0, 24, 12} {
		if err := s.CreateMessage(ctx(t), all[i]); err != nil {
			t.Fatal(err)
		}
	}
	for i, m := range all {
		if i == 3 || i == 0 || i == 24 || i == 12 {
			continue
		}
		if err := s.CreateMessage(ctx(t), m); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateMessage(ctx(t), store.Message{ID: newID(t), RoomID: "page-other", AuthorID: "u", Content: "x", CreatedAt: base}); err != nil {
			t.Fatal(err)
		}
	}
	want := slices.Clone(all)
	sort.Slice(want, func(i, j int) bool { return want[i].ID > want[j].ID }) // newest first

	var (
		got    []store.Message
		before string
		sizes  []int
	)
	for range 10 {
		page, err := s.ListMessages(ctx(t), "page", before, 10)
		if err != nil {
			t.Fatalf("ListMessages(before %q): %v", before, err)
		}
		sizes = append(sizes, len(page))
		if len(page) == 0 {
			break
		}
		got = append(got, page...)
		before = page[len(page)-1].ID
	}
	if !slices.Equal(sizes, []int{10, 10, 5, 0}) {
		t.Errorf("page sizes = %v, want [10 10 5 0]", sizes)
	}
	if len(got) != len(want) {
		t.Fatalf("paged %d messages, want %d", len(got), len(want))
	}
	for i := range got {
		checkMessage(t, fmt.Sprintf("message %d", i), got[i], want[i])
	}

	// before is exclusive and need not be an existing id.
	page, err := s.ListMessages(ctx(t), "page", want[3].ID, 2)
	if err != nil || len(page) != 2 || page[0].ID != want[4].ID || page[1].ID != want[5].ID {
		t.Errorf("ListMessages(before want[3], 2) = %d messages, %v", len(page), err)
	}
	page, err = s.ListMessages(ctx(t), "page", "~", 100) // sorts after every UUID
	if err != nil || len(page) != 25 {
		t.Errorf("ListMessages(before ~, 100) = %d messages, %v; want 25", len(page), err)
	}
}

func testPing(t *testing.T, s store.Store) {
	if err := s.Ping(ctx(t)); err != nil {
		t.Errorf("Ping: %v", err)
	}
}
