package rooms

import "github.com/parleyhq/parley/internal/store"

// updateOverhead is what updateCost adds per kept update for its slice slot
// and string headers (a DocUpdate is 8 words plus the RoomID it shares).
const updateOverhead = 96

// updateCost is the memory, in bytes, one kept update is accounted for: its
// ops, its client id and updateOverhead. The room id and snapshot are not
// counted (the id is shared with the room, the snapshot is dropped before an
// update is kept).
func updateCost(u store.DocUpdate) int { return len(u.Ops) + len(u.ClientID) + updateOverhead }

// history is the replay a room keeps in memory for catch-up
// (room:join since_version): the newest committed updates, consecutive
// versions in order, at most keep of them and at most keepBytes bytes by
// updateCost. Both bounds hold after every push and reset. Not safe for
// concurrent use (the room's mu guards it).
type history struct {
	ups   []store.DocUpdate
	bytes int // sum of updateCost over ups
}

// push appends u (whose version follows the last one kept) and drops the
// oldest updates until both bounds hold again. An update larger than
// keepBytes on its own leaves the history empty.
func (h *history) push(u store.DocUpdate, keep, keepBytes int) {
	u.Snapshot = nil
	h.ups = append(h.ups, u)
	h.bytes += updateCost(u)
	h.trim(keep, keepBytes)
}

// reset replaces the history with the newest of ups (consecutive versions,
// in order) that fit the bounds.
func (h *history) reset(ups []store.DocUpdate, keep, keepBytes int) {
	clear(h.ups)
	h.ups, h.bytes = h.ups[:0], 0
	start := len(ups)
	total := 0
	for start > 0 && len(ups)-start < keep {
		c := updateCost(ups[start-1])
		if total+c > keepBytes {
			break
		}
		total += c
		start--
	}
	for _, u := range ups[start:] {
		u.Snapshot = nil
		h.ups = append(h.ups, u)
	}
	h.bytes = total
}

func (h *history) trim(keep, keepBytes int) {
	drop := 0
	for drop < len(h.ups) && (len(h.ups)-drop > keep || h.bytes > keepBytes) {
		h.bytes -= updateCost(h.ups[drop])
		drop++
	}
	if drop == 0 {
		return
	}
	clear(h.ups[:drop]) // let the GC have the ops
	if drop == len(h.ups) {
		h.ups = h.ups[:0]
		return
	}
	// Reslicing forward keeps appends amortised O(1): when the slice
	// reaches its capacity, append copies only the kept updates.
	h.ups = h.ups[drop:]
}

// since returns a copy of the kept updates with version > v when every one
// of them is kept (v+1 is the oldest kept version or later), else ok=false.
// current is the room's committed version: v == current gives an empty,
// non-nil list.
func (h *history) since(v, current int64) ([]store.DocUpdate, bool) {
	if v > current || v < 0 {
		return nil, false
	}
	if v == current {
		return []store.DocUpdate{}, true
	}
	if len(h.ups) == 0 || h.ups[0].Version > v+1 {
		return nil, false
	}
	start := int(v + 1 - h.ups[0].Version)
	if start >= len(h.ups) {
		return nil, false
	}
	out := make([]store.DocUpdate, len(h.ups)-start)
	copy(out, h.ups[start:])
	return out, true
}

// len is the number of kept updates.
func (h *history) len() int { return len(h.ups) }
