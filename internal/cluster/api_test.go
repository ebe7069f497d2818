package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// Gather asks every live node (itself without NATS) and names those that
// did not answer: a node without the server-API subscription, one that
// answers an error, one that is too slow.
func TestGather(t *testing.T) {
	url := startEmbedded(t).url()
	cluster := newCluster(t, url)
	a, _ := join(t, url, cluster, "a")
	b, _ := join(t, url, cluster, "b")
	c, _ := join(t, url, cluster, "c") // never starts the API
	d, _ := join(t, url, cluster, "d")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, n := range []*Node{a, b} {
		id := n.NodeID()
		if err := n.StartAPI(ctx, func(op string, body []byte) ([]byte, error) {
			if op == "fail" {
				return nil, errors.New("no")
			}
			return []byte(id + ":" + op + ":" + string(body)), nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	release := make(chan struct{})
	defer close(release)
	if err := d.StartAPI(ctx, func(string, []byte) ([]byte, error) { <-release; return nil, nil }); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "four live nodes", func() bool { return fmt.Sprint(a.LiveNodes()) == "[a b c d]" })
	_ = c
	gctx, gcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	answers, missing := a.Gather(gctx, "echo", []byte("x"))
	gcancel()
	if fmt.Sprint(missing) != "[c d]" || len(answers) != 2 || string(answers["a"]) != "a:echo:x" || string(answers["b"]) != "b:echo:x" {
		t.Fatalf("answers %q missing %v", answers, missing)
	}
	gctx, gcancel = context.WithTimeout(ctx, 300*time.Millisecond)
	answers, missing = b.Gather(gctx, "fail", nil)
	gcancel()
	if len(answers) != 0 || fmt.Sprint(missing) != "[a b c d]" {
		t.Fatalf("errors: answers %q missing %v", answers, missing)
	}
}

// FuzzDecodeAPIRequest: anything published on <cluster>.node.<id>.api is
// refused or decoded without a panic, and what is accepted round-trips.
func FuzzDecodeAPIRequest(f *testing.F) {
	f.Add(encodeAPIRequest("disconnect", []byte(`{"user_id":"u"}`)))
	f.Add([]byte{})
	f.Add([]byte{1, 0})
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, b []byte) {
		op, body, err := decodeAPIRequest(b)
		if err != nil {
			return
		}
		op2, body2, err := decodeAPIRequest(encodeAPIRequest(op, body))
		if err != nil || op2 != op || !bytes.Equal(body, body2) {
			t.Fatalf("round trip changed %q %q → %q %q (%v)", op, body, op2, body2, err)
		}
		_, _ = decodeAPIReply(b)
	})
}
