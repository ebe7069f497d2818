package metrics

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/parleyhq/parley/internal/protocol"
)

// series counts the series of the parley_* families the registry exposes.
func series(t *testing.T, m *Metrics) int {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		n += len(mf.GetMetric())
	}
	return n
}

// TestLabelsFromFixedSets: types, codes and close codes a client chooses
// never become new series (issue 9 §5).
func TestLabelsFromFixedSets(t *testing.T) {
	m := New(nil)
	before := series(t, m)
	for i := range 500 {
		typ := fmt.Sprintf("room:x%d", i)
		m.In(typ, true)
		m.In(typ, false)
		m.OutFrame(protocol.Encode(typ, "", nil))
		m.Error(typ)
		m.Close(3000 + i)
	}
	if after := series(t, m); after != before {
		t.Fatalf("series grew from %d to %d", before, after)
	}
	if got := testutil.ToFloat64(m.MessagesIn.WithLabelValues(protocol.LabelUnknown)); got != 1000 {
		t.Fatalf("unknown in = %v, want 1000", got)
	}
	if got := testutil.ToFloat64(m.MessagesOut.WithLabelValues(protocol.LabelOther)); got != 500 {
		t.Fatalf("other out = %v, want 500", got)
	}
	if got := testutil.ToFloat64(m.Closes.WithLabelValues(protocol.LabelOther)); got != 500 {
		t.Fatalf("other closes = %v, want 500", got)
	}
	// Known values keep their own label.
	m.In(protocol.TypeRoomJoin, true)
	m.In(protocol.TypeRoomJoin, false) // refused (rate limit): unknown
	m.OutFrame(protocol.Encode(protocol.TypeMessageCreate, "", map[string]string{"id": "m1"}))
	m.Close(protocol.CloseSlowConsumer)
	m.Error(protocol.CodeForbidden)
	checks := []struct {
		name string
		got  float64
	}{
		{"in room:join", testutil.ToFloat64(m.MessagesIn.WithLabelValues(protocol.TypeRoomJoin))},
		{"out message:create", testutil.ToFloat64(m.MessagesOut.WithLabelValues(protocol.TypeMessageCreate))},
		{"close 4008", testutil.ToFloat64(m.Closes.WithLabelValues("4008"))},
		{"error forbidden", testutil.ToFloat64(m.Errors.WithLabelValues(protocol.CodeForbidden))},
	}
	for _, c := range checks {
		if c.got != 1 {
			t.Errorf("%s = %v, want 1", c.name, c.got)
		}
	}
}

func TestOutFrameAllocatesNothing(t *testing.T) {
	m := New(nil)
	frame := protocol.Encode(protocol.TypeRoomEvent, "", map[string]string{"a": "b"})
	if n := testing.AllocsPerRun(1000, func() { m.OutFrame(frame) }); n != 0 {
		t.Fatalf("OutFrame allocates %v times per call", n)
	}
}

func BenchmarkOutFrame(b *testing.B) {
	m := New(nil)
	frame := protocol.Encode(protocol.TypeRoomPresenceUpdated, "", map[string]string{"room_id": "r", "client_id": "c"})
	b.ReportAllocs()
	for b.Loop() {
		m.OutFrame(frame)
	}
}
