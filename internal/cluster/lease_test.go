package cluster

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/rooms"
)

// Leases: create only when free, compare-and-set on the epoch, release
// only the current lease, epochs strictly increasing across
// create-release-create and take-overs; any room id of
// [A-Za-z0-9._:-]{1,128} works. Against the embedded server and NATS 2.9.
func TestLeases(t *testing.T) {
	forEachServer(t, func(t *testing.T, url string) {
		cluster := newCluster(t, url)
		a, _ := join(t, url, cluster, "a")
		b, _ := join(t, url, cluster, "b")
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()

		for _, room := range []string{"r", "team.general:2024-01_x", strings.Repeat("Az09._:-", 16)} {
			if _, ok, err := a.Lease(ctx, room); ok || err != nil {
				t.Fatalf("%q: lease before any: ok=%v err=%v", room, ok, err)
			}
			l1, err := a.Acquire(ctx, room, nil)
			if err != nil || l1.Node != "a" || l1.Epoch == 0 {
				t.Fatalf("%q: create: %+v %v", room, l1, err)
			}
			if got, ok, err := b.Lease(ctx, room); !ok || err != nil || got != l1 {
				t.Fatalf("%q: b reads %+v ok=%v err=%v, want %+v", room, got, ok, err, l1)
			}
			if _, err := b.Acquire(ctx, room, nil); !errors.Is(err, rooms.ErrLeaseTaken) {
				t.Fatalf("%q: second create: %v, want ErrLeaseTaken", room, err)
			}
			// b takes over from a (compare and set on a's epoch).
			l2, err := b.Acquire(ctx, room, &l1)
			if err != nil || l2.Node != "b" || l2.Epoch <= l1.Epoch {
				t.Fatalf("%q: take over: %+v %v (after %+v)", room, l2, err, l1)
			}
			// a's stale view loses.
			if _, err := a.Acquire(ctx, room, &l1); !errors.Is(err, rooms.ErrLeaseTaken) {
				t.Fatalf("%q: stale take over: %v, want ErrLeaseTaken", room, err)
			}
			// Releasing a stale lease does nothing.
			if err := a.Release(ctx, room, l1); err != nil {
				t.Fatalf("%q: stale release: %v", room, err)
			}
			if got, ok, _ := a.Lease(ctx, room); !ok || got != l2 {
				t.Fatalf("%q: after a stale release: %+v ok=%v, want %+v", room, got, ok, l2)
			}
			if err := b.Release(ctx, room, l2); err != nil {
				t.Fatalf("%q: release: %v", room, err)
			}
			if _, ok, err := a.Lease(ctx, room); ok || err != nil {
				t.Fatalf("%q: lease after release: ok=%v err=%v", room, ok, err)
			}
			// Releasing twice is harmless; a CAS on the released lease loses.
			if err := b.Release(ctx, room, l2); err != nil {
				t.Fatalf("%q: second release: %v", room, err)
			}
			if _, err := a.Acquire(ctx, room, &l2); !errors.Is(err, rooms.ErrLeaseTaken) {
				t.Fatalf("%q: CAS on a released lease: %v, want ErrLeaseTaken", room, err)
			}
			// Create after delete (a KV delete marker) works, with a higher epoch.
			l3, err := a.Acquire(ctx, room, nil)
			if err != nil || l3.Node != "a" || l3.Epoch <= l2.Epoch {
				t.Fatalf("%q: create after release: %+v %v (after %+v)", room, l3, err, l2)
			}
			if got, ok, _ := b.Lease(ctx, room); !ok || got != l3 {
				t.Fatalf("%q: after re-create: %+v ok=%v, want %+v", room, got, ok, l3)
			}
			// Renewing one's own lease is a take-over like any other.
			l4, err := a.Acquire(ctx, room, &l3)
			if err != nil || l4.Epoch <= l3.Epoch {
				t.Fatalf("%q: renew: %+v %v", room, l4, err)
			}
			if err := a.Release(ctx, room, l4); err != nil {
				t.Fatalf("%q: final release: %v", room, err)
			}
		}
		if _, err := a.Acquire(ctx, "", nil); err == nil {
			t.Fatal("empty room id accepted")
		}
	})
}

// Two nodes race for one free room: exactly one wins.
func TestLeaseRace(t *testing.T) {
	url := startEmbedded(t).url()
	cluster := newCluster(t, url)
	nodes := make([]*Node, 4)
	for i := range nodes {
		nodes[i], _ = join(t, url, cluster, string(rune('a'+i)))
	}
	ctx := context.Background()
	for round := 0; round < 20; round++ {
		room := "race-" + string(rune('A'+round))
		wins := make(chan rooms.Lease, len(nodes))
		errs := make(chan error, len(nodes))
		for _, n := range nodes {
			go func() {
				l, err := n.Acquire(ctx, room, nil)
				if err != nil {
					errs <- err
					return
				}
				wins <- l
			}()
		}
		var won []rooms.Lease
		for range nodes {
			select {
			case l := <-wins:
				won = append(won, l)
			case err := <-errs:
				if !errors.Is(err, rooms.ErrLeaseTaken) {
					t.Fatalf("round %d: %v", round, err)
				}
			}
		}
		if len(won) != 1 {
			t.Fatalf("round %d: %d winners: %+v", round, len(won), won)
		}
		if got, ok, _ := nodes[0].Lease(ctx, room); !ok || got != won[0] {
			t.Fatalf("round %d: lease %+v, winner %+v", round, got, won[0])
		}
	}
}
