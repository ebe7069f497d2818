package rooms

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/parleyhq/parley/internal/store"
)

// The history's accounting is exact and both bounds hold after every push,
// whatever the update sizes; since serves exactly the kept window.
func TestHistoryBounds(t *testing.T) {
	const keep, keepBytes = 50, 10_000
	var h history
	var all []store.DocUpdate
	for v := int64(1); v <= 500; v++ {
		size := int(v*37) % 3000 // 0 … 2999 bytes of ops, some larger than others
		u := store.DocUpdate{RoomID: "r", Version: v, ClientID: "client",
			Ops: json.RawMessage(`"` + strings.Repeat("x", size) + `"`), Snapshot: json.RawMessage(`{}`)}
		all = append(all, u)
		h.push(u, keep, keepBytes)
		sum := 0
		for i, k := range h.ups {
			sum += updateCost(k)
			if k.Snapshot != nil || k.Version != h.ups[0].Version+int64(i) {
				t.Fatalf("v%d: kept update %d is %d (snapshot %v)", v, i, k.Version, k.Snapshot != nil)
			}
		}
		if sum != h.bytes || h.bytes > keepBytes || len(h.ups) > keep {
			t.Fatalf("v%d: %d updates, accounted %d, actual %d bytes (bounds %d, %d)", v, len(h.ups), h.bytes, sum, keep, keepBytes)
		}
		if len(h.ups) > 0 && h.ups[len(h.ups)-1].Version != v {
			t.Fatalf("v%d: newest kept is %d", v, h.ups[len(h.ups)-1].Version)
		}
		// The window is as large as the bounds allow: one more older
		// update would break one of them.
		if n := len(h.ups); n < keep && int(v) > n && h.bytes+updateCost(all[int(v)-n-1]) <= keepBytes {
			t.Fatalf("v%d: dropped more than needed (%d kept, %d bytes)", v, n, h.bytes)
		}
	}
	first := h.ups[0].Version
	if ups, ok := h.since(first-1, 500); !ok || len(ups) != len(h.ups) {
		t.Fatalf("since(first-1) = %d, %v", len(ups), ok)
	}
	if _, ok := h.since(first-2, 500); ok {
		t.Fatal("since before the window served updates")
	}
	if ups, ok := h.since(500, 500); !ok || ups == nil || len(ups) != 0 {
		t.Fatal("since(current) must be an empty list")
	}
	if _, ok := h.since(501, 500); ok {
		t.Fatal("since(future) served updates")
	}
	// reset keeps the newest that fit, with the same accounting.
	h.reset(all, keep, keepBytes)
	sum := 0
	for _, k := range h.ups {
		sum += updateCost(k)
	}
	if sum != h.bytes || h.bytes > keepBytes || len(h.ups) > keep || h.ups[len(h.ups)-1].Version != 500 {
		t.Fatalf("reset: %d updates, %d/%d bytes", len(h.ups), h.bytes, sum)
	}
	// An update larger than the byte bound on its own is not kept.
	h.push(store.DocUpdate{Version: 501, Ops: json.RawMessage(strings.Repeat("1", keepBytes))}, keep, keepBytes)
	if len(h.ups) != 0 || h.bytes != 0 {
		t.Fatalf("oversized update: %d kept, %d bytes", len(h.ups), h.bytes)
	}
}
