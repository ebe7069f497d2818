package storetest

import (
	"encoding/json"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/store"
)

// Fencing (Documents.Fence, DocUpdate.Epoch). The decision these tests pin
// down for a call that mixes rooms: one fenced room fails the WHOLE call
// with ErrFenced and nothing of it is written (epochs included), exactly
// like ErrConflict; telling rooms apart is the Committer's job (it writes
// each room on its own after such a failure).

// epd is upd with an epoch.
func epd(room string, v int64, epoch uint64) store.DocUpdate {
	u := upd(room, v, "c")
	u.Epoch = epoch
	return u
}

func appendErr(t *testing.T, s store.Store, us ...store.DocUpdate) error {
	t.Helper()
	return s.AppendUpdates(ctx(t), us)
}

func wantFenced(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, store.ErrFenced) {
		t.Errorf("%s = %v, want ErrFenced", what, err)
	}
	if errors.Is(err, store.ErrConflict) {
		t.Errorf("%s = %v: ErrFenced must not also be ErrConflict", what, err)
	}
}

func mustFence(t *testing.T, s store.Store, room string, epoch uint64) {
	t.Helper()
	if err := s.Fence(ctx(t), room, epoch); err != nil {
		t.Fatalf("Fence(%q, %d): %v", room, epoch, err)
	}
}

// checkVersions fails unless the room's stored updates are exactly want.
func checkVersions(t *testing.T, s store.Store, room string, want []int64) {
	t.Helper()
	if got := versions(load(t, s, room).Updates); !slices.Equal(got, want) {
		t.Errorf("room %s versions = %v, want %v", room, got, want)
	}
}

// Epoch 0 is the single-node default: it passes on a room never fenced,
// and loaded updates carry no epoch.
func testFenceEpochZero(t *testing.T, s store.Store) {
	const room = "zero"
	mustAppend(t, s, upd(room, 1, "c"), upd(room, 2, "c"))
	mustAppend(t, s, upd(room, 3, "c"))
	mustFence(t, s, room, 0) // never fenced: 0 is the stored epoch
	mustFence(t, s, "never-written", 0)
	mustAppend(t, s, upd(room, 4, "c"))
	for _, u := range load(t, s, room).Updates {
		if u.Epoch != 0 {
			t.Errorf("loaded update %d has Epoch %d, want 0", u.Version, u.Epoch)
		}
	}
	checkVersions(t, s, room, seq(1, 4))

	// Once fenced, epoch 0 is stale like any lower epoch.
	mustFence(t, s, room, 1)
	wantFenced(t, "AppendUpdates(epoch 0 after Fence 1)", appendErr(t, s, upd(room, 5, "c")))
	wantFenced(t, "Fence(0) after Fence(1)", s.Fence(ctx(t), room, 0))
	checkVersions(t, s, room, seq(1, 4))
	mustAppend(t, s, epd(room, 5, 1))
	checkVersions(t, s, room, seq(1, 5))
}

// Fence raises the epoch, is idempotent at the stored epoch, refuses a
// lower one; appends below the fenced epoch fail and write nothing.
func testFenceRaise(t *testing.T, s store.Store) {
	const room = "raise"
	mustAppend(t, s, epd(room, 1, 0))
	mustFence(t, s, room, 3)
	mustFence(t, s, room, 3) // equal: fine
	wantFenced(t, "Fence(2) after Fence(3)", s.Fence(ctx(t), room, 2))
	mustFence(t, s, room, 3) // the refused Fence changed nothing

	wantFenced(t, "AppendUpdates(epoch 2 after Fence 3)", appendErr(t, s, epd(room, 2, 2)))
	checkVersions(t, s, room, []int64{1})
	mustAppend(t, s, epd(room, 2, 3)) // equal passes

	// A deposed owner: the new owner fences with 4, the old one's commits fail.
	mustFence(t, s, room, 4)
	stale := epd(room, 3, 3)
	stale.Snapshot = json.RawMessage(`{"stale":true}`)
	wantFenced(t, "AppendUpdates(epoch 3 after Fence 4)", appendErr(t, s, stale))
	doc := load(t, s, room)
	if doc.Version != 0 || string(doc.Data) != "{}" {
		t.Errorf("a fenced snapshot was written: version %d data %s", doc.Version, doc.Data)
	}
	checkVersions(t, s, room, []int64{1, 2})
	mustAppend(t, s, epd(room, 3, 4))

	// Fence on a room never written is fine: the first owner fences before
	// loading.
	mustFence(t, s, "raise-new", 7)
	wantFenced(t, "Fence(6) on raise-new", s.Fence(ctx(t), "raise-new", 6))
	wantFenced(t, "AppendUpdates(raise-new epoch 6)", appendErr(t, s, epd("raise-new", 1, 6)))
	checkVersions(t, s, "raise-new", []int64{})
	mustAppend(t, s, epd("raise-new", 1, 7))
}

// An update's epoch above the stored one raises it (an implicit fence);
// below it fails and writes nothing; equal passes.
func testAppendEpochStale(t *testing.T, s store.Store) {
	const room = "stale"
	mustAppend(t, s, epd(room, 1, 2)) // never fenced: raises to 2
	wantFenced(t, "AppendUpdates(epoch 1 after epoch 2)", appendErr(t, s, epd(room, 2, 1)))
	checkVersions(t, s, room, []int64{1})
	mustAppend(t, s, epd(room, 2, 2))
	wantFenced(t, "Fence(1) after an epoch-2 append", s.Fence(ctx(t), room, 1))
	mustFence(t, s, room, 2)

	mustAppend(t, s, epd(room, 3, 5)) // raises to 5
	wantFenced(t, "Fence(4) after an epoch-5 append", s.Fence(ctx(t), room, 4))
	wantFenced(t, "AppendUpdates(epoch 4 after epoch 5)", appendErr(t, s, epd(room, 4, 4)))
	checkVersions(t, s, room, seq(1, 3))
	// A version conflict at a good epoch is ErrConflict, not ErrFenced,
	// also when a later update of the call raises the epoch (which the
	// failed call then leaves as it was).
	for _, batch := range [][]store.DocUpdate{
		{epd(room, 3, 5)},
		{epd(room, 3, 5), epd(room, 4, 6)},
	} {
		if err := appendErr(t, s, batch...); !errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrFenced) {
			t.Errorf("AppendUpdates(duplicate version %d at epoch 5, %d updates) = %v, want ErrConflict", 3, len(batch), err)
		}
	}
	snap := epd("stale-snap", 1, 2)
	snap.Snapshot = json.RawMessage(`{}`)
	mustAppend(t, s, snap) // version 1 is the snapshot's
	if err := appendErr(t, s, epd("stale-snap", 1, 2), epd("stale-snap", 2, 3)); !errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrFenced) {
		t.Errorf("AppendUpdates(version at the snapshot, epochs 2, 3) = %v, want ErrConflict", err)
	}
	mustFence(t, s, room, 5)
	mustFence(t, s, "stale-snap", 2)
}

// Epochs are per room: fencing one room does not touch another.
func testEpochPerRoom(t *testing.T, s store.Store) {
	mustFence(t, s, "ep-a", 10)
	mustAppend(t, s, epd("ep-b", 1, 1))
	mustAppend(t, s, epd("ep-c", 1, 0))
	mustFence(t, s, "ep-b", 3)
	mustFence(t, s, "ep-c", 2)
	wantFenced(t, "AppendUpdates(ep-a epoch 9)", appendErr(t, s, epd("ep-a", 1, 9)))
	mustAppend(t, s, epd("ep-b", 2, 3), epd("ep-a", 1, 10), epd("ep-c", 2, 2))
	mustFence(t, s, "ep-a", 10)
	checkVersions(t, s, "ep-a", []int64{1})
	checkVersions(t, s, "ep-b", []int64{1, 2})
	checkVersions(t, s, "ep-c", []int64{1, 2})
}

// One fenced room fails the whole call (ErrFenced, like ErrConflict):
// nothing of it is written, no epoch raised, no snapshot replaced.
func testFencedCallWritesNothing(t *testing.T, s store.Store) {
	mustFence(t, s, "fc-a", 5)
	mustAppend(t, s, epd("fc-b", 1, 0))
	snap := epd("fc-b", 3, 0)
	snap.Snapshot = json.RawMessage(`{"b":3}`)
	for _, tc := range []struct {
		name  string
		batch []store.DocUpdate
	}{
		{"fenced room last", []store.DocUpdate{epd("fc-b", 2, 0), epd("fc-c", 1, 7), epd("fc-a", 1, 4)}},
		{"fenced room first", []store.DocUpdate{epd("fc-a", 1, 4), epd("fc-b", 2, 0), snap, epd("fc-c", 1, 7)}},
		{"epoch 0 on the fenced room", []store.DocUpdate{epd("fc-c", 1, 7), epd("fc-a", 1, 0), epd("fc-b", 2, 0)}},
		{"fenced and conflicting", []store.DocUpdate{epd("fc-c", 1, 7), epd("fc-b", 1, 0), epd("fc-a", 1, 4)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := appendErr(t, s, tc.batch...)
			if tc.name == "fenced and conflicting" {
				// Either error may be reported; the call still fails whole.
				if !errors.Is(err, store.ErrFenced) && !errors.Is(err, store.ErrConflict) {
					t.Fatalf("AppendUpdates = %v, want ErrFenced or ErrConflict", err)
				}
			} else {
				wantFenced(t, "AppendUpdates", err)
			}
			checkVersions(t, s, "fc-a", []int64{})
			checkVersions(t, s, "fc-b", []int64{1})
			checkVersions(t, s, "fc-c", []int64{})
			if doc := load(t, s, "fc-b"); doc.Version != 0 {
				t.Errorf("fc-b snapshot version %d, want 0", doc.Version)
			}
		})
	}
	// fc-c's epoch was not raised to 7 by the failed calls.
	mustFence(t, s, "fc-c", 6)
	// A conflict in one room does not raise another room's epoch either.
	if err := appendErr(t, s, epd("fc-d", 1, 3), epd("fc-b", 1, 0)); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("AppendUpdates(conflict) = %v, want ErrConflict", err)
	}
	mustFence(t, s, "fc-d", 2)
	checkVersions(t, s, "fc-d", []int64{})
	// The rooms that were not fenced are written on their own.
	mustAppend(t, s, epd("fc-b", 2, 0), snap, epd("fc-c", 1, 7))
	checkVersions(t, s, "fc-c", []int64{1})
	if doc := load(t, s, "fc-b"); doc.Version != 3 || string(doc.Data) != `{"b":3}` {
		t.Errorf("fc-b snapshot = %d %s, want 3 {\"b\":3}", doc.Version, doc.Data)
	}
}

// Within one call, a room's updates are checked one after the other: a
// higher epoch raises the room's epoch for the next ones, so a lower epoch
// after it is fenced.
func testEpochsWithinCall(t *testing.T, s store.Store) {
	const room = "within"
	wantFenced(t, "AppendUpdates(epoch 5 then 3)", appendErr(t, s, epd(room, 1, 5), epd(room, 2, 3)))
	wantFenced(t, "AppendUpdates(epoch 5 then 0)", appendErr(t, s, epd(room, 1, 5), epd(room, 2, 0)))
	checkVersions(t, s, room, []int64{})
	mustFence(t, s, room, 4) // not raised to 5 by the failed calls

	mustAppend(t, s, epd(room, 1, 4), epd(room, 2, 6)) // raises to 6 midway
	wantFenced(t, "Fence(5) after epochs 4, 6", s.Fence(ctx(t), room, 5))
	wantFenced(t, "AppendUpdates(epoch 4 after epochs 4, 6)", appendErr(t, s, epd(room, 3, 4)))
	// The first update is checked against the stored epoch even when a
	// later one of the call is high enough.
	wantFenced(t, "AppendUpdates(epoch 5 then 8 at stored 6)", appendErr(t, s, epd(room, 3, 5), epd(room, 4, 8)))
	mustFence(t, s, room, 6)
	checkVersions(t, s, room, []int64{1, 2})

	// Epoch 0 then an epoch on a room never fenced: both pass, epoch raised.
	mustAppend(t, s, epd("within-0", 1, 0), epd("within-0", 2, 2), epd("within-0", 3, 2))
	wantFenced(t, "Fence(1) after epochs 0, 2", s.Fence(ctx(t), "within-0", 1))
	checkVersions(t, s, "within-0", seq(1, 3))
}

// Epochs above store.MaxEpoch cannot be stored: refused, but not as
// ErrFenced (they are a caller's bug, not a lost room).
func testEpochTooLarge(t *testing.T, s store.Store) {
	const room = "huge"
	err := appendErr(t, s, epd(room, 1, store.MaxEpoch+1))
	if err == nil || errors.Is(err, store.ErrFenced) || errors.Is(err, store.ErrConflict) {
		t.Errorf("AppendUpdates(epoch MaxEpoch+1) = %v, want another error", err)
	}
	err = s.Fence(ctx(t), room, store.MaxEpoch+1)
	if err == nil || errors.Is(err, store.ErrFenced) {
		t.Errorf("Fence(MaxEpoch+1) = %v, want another error", err)
	}
	checkVersions(t, s, room, []int64{})
	mustFence(t, s, room, 1) // nothing was raised
	mustAppend(t, s, epd(room, 1, store.MaxEpoch))
	mustFence(t, s, room, store.MaxEpoch)
	wantFenced(t, "Fence(MaxEpoch-1)", s.Fence(ctx(t), room, store.MaxEpoch-1))
}

// A Fence racing an owner's appends: every append that succeeded is in what
// the new owner loads right after Fence returns, and none succeeds after.
func testFenceConcurrentAppend(t *testing.T, s store.Store) {
	const room = "race"
	var (
		acked atomic.Int64
		done  = make(chan error, 1)
		c     = ctx(t)
	)
	go func() {
		for v := int64(1); ; v++ {
			if err := s.AppendUpdates(c, []store.DocUpdate{epd(room, v, 1)}); err != nil {
				done <- err
				return
			}
			acked.Store(v)
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for acked.Load() < 10 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if acked.Load() < 10 {
		t.Fatalf("the old owner committed only %d updates", acked.Load())
	}
	mustFence(t, s, room, 2)
	loaded := load(t, s, room)
	err := <-done
	wantFenced(t, "the old owner's append after Fence", err)
	n := int64(len(loaded.Updates))
	if n != acked.Load() || !slices.Equal(versions(loaded.Updates), seq(1, n)) {
		t.Errorf("loaded right after Fence: %d updates (versions %v...), the old owner had %d acknowledged",
			n, versions(loaded.Updates[:min(n, 3)]), acked.Load())
	}
	checkVersions(t, s, room, seq(1, n))
	mustAppend(t, s, epd(room, n+1, 2)) // the new owner goes on
}

// Claim hands out the room's next epoch: 1 for a room never fenced, then
// one more each time, above whatever Fence set; a deposed owner (an older
// claim) can no longer append, the newest can. Rooms are independent.
func testClaim(t *testing.T, s store.Store) {
	const room, other = "claim", "claim-other"
	claim := func(room string) uint64 {
		t.Helper()
		e, err := s.Claim(ctx(t), room)
		if err != nil {
			t.Fatalf("Claim(%s): %v", room, err)
		}
		return e
	}
	if e := claim(room); e != 1 {
		t.Fatalf("first claim = %d, want 1", e)
	}
	old := claim(room)
	mustAppend(t, s, epd(room, 1, old))
	newer := claim(room)
	if newer != old+1 {
		t.Fatalf("claims %d then %d, want consecutive", old, newer)
	}
	wantFenced(t, "AppendUpdates by the deposed owner", appendErr(t, s, epd(room, 2, old)))
	mustAppend(t, s, epd(room, 2, newer))
	mustFence(t, s, room, 10)
	if e := claim(room); e != 11 {
		t.Fatalf("claim after Fence(10) = %d, want 11", e)
	}
	if e := claim(other); e != 1 {
		t.Fatalf("another room's first claim = %d, want 1", e)
	}
	checkVersions(t, s, room, []int64{1, 2})
}
