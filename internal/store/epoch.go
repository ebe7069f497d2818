package store

import (
	"fmt"
	"maps"
	"math"
)

// MaxEpoch is the greatest epoch a store keeps: both SQL databases store
// signed 64-bit integers. Epochs come from a lease counter (a NATS KV
// revision) and never get near it.
const MaxEpoch = math.MaxInt64

// CheckEpoch returns an error (not ErrFenced) when epoch is above MaxEpoch.
// For implementations.
func CheckEpoch(epoch uint64) error {
	if epoch > MaxEpoch {
		return fmt.Errorf("store: epoch %d above the greatest storable (%d)", epoch, uint64(MaxEpoch))
	}
	return nil
}

// EpochSpan is the epochs of one room's updates in one AppendUpdates call.
type EpochSpan struct {
	Min, Max uint64 // of the room's first and last update (epochs never go down within a call)
}

// EpochSpans checks the epochs of an AppendUpdates call before any I/O and
// returns each room's span, for implementations. It returns a nil map when
// every update has epoch 0 (the single-node case, kept allocation-free);
// then no room needs an epoch raised, only checked against 0. Rooms whose
// updates all have epoch 0 are left out of a non-nil map too.
//
// It fails with ErrFenced when an update of a room has a lower epoch than
// an earlier update of the same room in the call (the earlier one raises
// the room's epoch, which fences the later one), and with a CheckEpoch
// error for an epoch above MaxEpoch. With the spans, a store checks the
// call in one step per room: every update passes iff the room's stored
// epoch is <= Min, and then Max is the room's new epoch.
func EpochSpans(updates []DocUpdate) (map[string]EpochSpan, error) {
	i := 0
	for i < len(updates) && updates[i].Epoch == 0 {
		i++
	}
	if i == len(updates) {
		return nil, nil
	}
	spans := make(map[string]EpochSpan)
	for _, u := range updates {
		if err := CheckEpoch(u.Epoch); err != nil {
			return nil, fmt.Errorf("room %q version %d: %w", u.RoomID, u.Version, err)
		}
		sp, ok := spans[u.RoomID]
		if ok && u.Epoch < sp.Max {
			return nil, fmt.Errorf("%w: room %q version %d has epoch %d after epoch %d in the same call",
				ErrFenced, u.RoomID, u.Version, u.Epoch, sp.Max)
		}
		if !ok {
			sp.Min = u.Epoch
		}
		sp.Max = u.Epoch
		spans[u.RoomID] = sp
	}
	maps.DeleteFunc(spans, func(_ string, sp EpochSpan) bool { return sp.Max == 0 })
	return spans, nil
}
