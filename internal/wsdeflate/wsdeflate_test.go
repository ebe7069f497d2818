package wsdeflate

import (
	"bytes"
	stdflate "compress/flate"
	"errors"
	"io"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/gobwas/httphead"
)

// stdCompress compresses with the standard library as a peer would (sync
// flush, tail removed: RFC 7692 §7.2.1).
func stdCompress(t testing.TB, p []byte) []byte {
	var b bytes.Buffer
	w, err := stdflate.NewWriter(&b, stdflate.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(p)
	_ = w.Flush()
	return bytes.TrimSuffix(b.Bytes(), tail)
}

func bigJSON(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"type":"room:members_changed","data":{"joined":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"client_id":"c-`)
		b.WriteString(strings.Repeat(string(rune('a'+i%26)), 8))
		b.WriteString(`","user_id":"u","presence":{}}`)
	}
	b.WriteString(`]}}`)
	return []byte(b.String())
}

func TestCompressReadableByStandardInflater(t *testing.T) {
	raw := bigJSON(300)
	z := Compress(raw)
	if z == nil || len(z) >= len(raw)/2 {
		t.Fatalf("compressed %d → %d", len(raw), len(z))
	}
	if bytes.HasSuffix(z, tail) {
		t.Fatal("tail not stripped")
	}
	// What a peer does (RFC 7692 §7.2.2): append the tail and inflate.
	r := stdflate.NewReader(io.MultiReader(bytes.NewReader(z), bytes.NewReader(tail)))
	got := make([]byte, len(raw))
	if _, err := io.ReadFull(r, got); err != nil || !bytes.Equal(got, raw) {
		t.Fatalf("standard inflate: %v, equal=%v", err, bytes.Equal(got, raw))
	}
	if Compress([]byte("x")) != nil {
		t.Fatal("a frame that does not shrink must stay raw")
	}
}

func TestInflate(t *testing.T) {
	raw := bigJSON(200)
	for name, z := range map[string][]byte{"ours": Compress(raw), "stdlib level 9": stdCompress(t, raw)} {
		got, err := Inflate(z, len(raw))
		if err != nil || !bytes.Equal(got, raw) {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := Inflate(z, len(raw)-1); !errors.Is(err, ErrTooBig) {
			t.Fatalf("%s one byte over the bound: %v", name, err)
		}
	}
	if got, err := Inflate(stdCompress(t, nil), 10); err != nil || len(got) != 0 {
		t.Fatalf("empty message: %q %v", got, err)
	}
	if _, err := Inflate([]byte{0xff, 0xff, 0xff, 0xff}, 1000); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("garbage: %v", err)
	}
}

// A decompression bomb: 64 MiB of zeros in ~64 KB. Inflate must stop at
// the bound without building the output.
func TestInflateBombBounded(t *testing.T) {
	bomb := stdCompress(t, make([]byte, 64<<20))
	var before, after testingMemStats
	before.read()
	_, err := Inflate(bomb, 64<<10)
	after.read()
	if !errors.Is(err, ErrTooBig) {
		t.Fatalf("bomb: %v", err)
	}
	if d := after.total - before.total; d > 4<<20 {
		t.Fatalf("inflating a bomb allocated %d bytes", d)
	}
}

func TestSharedCompressesOnce(t *testing.T) {
	raw := bigJSON(100)
	s := NewShared(raw)
	var wg sync.WaitGroup
	res := make([][]byte, 8)
	for i := range res {
		wg.Go(func() { res[i] = s.Compressed() })
	}
	wg.Wait()
	for _, r := range res[1:] {
		if &r[0] != &res[0][0] {
			t.Fatal("each caller got its own compressed copy")
		}
	}
}

func opt(t *testing.T, header string) httphead.Option {
	t.Helper()
	opts, ok := httphead.ParseOptions([]byte(header), nil)
	if !ok || len(opts) != 1 {
		t.Fatalf("parse %q", header)
	}
	return opts[0]
}

func TestNegotiate(t *testing.T) {
	for _, tc := range []struct {
		offer  string
		accept bool
	}{
		{"permessage-deflate", true},
		{"permessage-deflate; client_max_window_bits", true},
		{"permessage-deflate; client_max_window_bits=10", true},
		{"permessage-deflate; server_no_context_takeover; client_no_context_takeover", true},
		{"permessage-deflate; server_max_window_bits=15", true},
		{"permessage-deflate; server_max_window_bits=10", false}, // we compress once with the full window
		{"permessage-deflate; server_max_window_bits=99", false}, // invalid: declined, not an upgrade failure
		{"permessage-deflate; client_no_context_takeover; client_no_context_takeover", false},
		{"permessage-deflate; foo=bar", false},
		{"x-webkit-deflate-frame", false},
	} {
		n := NewNegotiator()
		resp, err := n.Negotiate(opt(t, tc.offer))
		if err != nil {
			t.Fatalf("%q: error %v (must decline instead)", tc.offer, err)
		}
		if n.Accepted() != tc.accept || (resp.Size() > 0) != tc.accept {
			t.Fatalf("%q: accepted=%v response %q", tc.offer, n.Accepted(), resp.String())
		}
		if tc.accept {
			got := resp.String()
			if !strings.Contains(got, "server_no_context_takeover") || !strings.Contains(got, "client_no_context_takeover") {
				t.Fatalf("%q: response %q lacks no_context_takeover", tc.offer, got)
			}
		}
	}
	// Offers come in order of preference: a bad one first, a good one next.
	n := NewNegotiator()
	_, _ = n.Negotiate(opt(t, "permessage-deflate; server_max_window_bits=9"))
	if resp, _ := n.Negotiate(opt(t, "permessage-deflate")); resp.Size() == 0 || !n.Accepted() {
		t.Fatal("second offer not taken")
	}
}

func FuzzInflate(f *testing.F) {
	f.Add(Compress(bigJSON(20)), 4096)
	f.Add([]byte{0x00, 0x00, 0xff, 0xff}, 10)
	f.Add([]byte{0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00}, 3)
	f.Fuzz(func(t *testing.T, z []byte, limit int) {
		if limit < 0 || limit > 1<<20 {
			return
		}
		out, err := Inflate(z, limit)
		if err == nil && len(out) > limit {
			t.Fatalf("%d bytes out, bound %d", len(out), limit)
		}
		if err != nil && !errors.Is(err, ErrTooBig) && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("unexpected error %v", err)
		}
		if err == nil && cap(out) > limit+1 {
			t.Fatalf("buffer of %d for bound %d", cap(out), limit)
		}
	})
}

type testingMemStats struct{ total uint64 }

func (m *testingMemStats) read() {
	var s runtime.MemStats
	runtime.ReadMemStats(&s)
	m.total = s.TotalAlloc
}
