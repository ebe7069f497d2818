package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/config"
	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/server"
	"github.com/parleyhq/parley/internal/server/servertest"
)

// TestMain lets the test binary stand in for the parley binary when
// 'connections --procs K' re-executes itself ("<exe> bench connections ...").
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "bench" {
		os.Exit(Main(os.Args[2:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// --- micro benchmarks of the wire code on the fan-out hot path ---

var (
	benchEvent = json.RawMessage(`{"bts":1732233445566778899,"bseq":123456,"bpub":0,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`) // 100 bytes
	benchData  = json.RawMessage(`{"room_id":"bench-room","client_id":"0b3c7a52-64a4-4f6e-9d64-0f6f5f7d6a11","user_id":"bench-user-1","event":` + string(benchEvent) + `}`)
	benchFrame = []byte(`{"type":"room:broadcast","id":"b123456","data":{"room_id":"bench-room","event":` + string(benchEvent) + `}}`)
)

// BenchmarkEncodeRoomEvent: protocol.Encode of a room:event frame whose
// data is already encoded (what rooms.broadcast does once per event).
func BenchmarkEncodeRoomEvent(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(protocol.Encode(protocol.TypeRoomEvent, "", benchData))))
	for b.Loop() {
		_ = protocol.Encode(protocol.TypeRoomEvent, "", benchData)
	}
}

// BenchmarkEncodeRoomEventStruct: the whole per-event encode of
// rooms.broadcast (json.Marshal of the data struct, then Encode).
func BenchmarkEncodeRoomEventStruct(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		data, _ := json.Marshal(struct {
			RoomID   string          `json:"room_id"`
			ClientID string          `json:"client_id"`
			UserID   string          `json:"user_id"`
			Event    json.RawMessage `json:"event"`
		}{"bench-room", "0b3c7a52-64a4-4f6e-9d64-0f6f5f7d6a11", "bench-user-1", benchEvent})
		_ = protocol.Encode(protocol.TypeRoomEvent, "", json.RawMessage(data))
	}
}

// BenchmarkDecodeBroadcast: protocol.Decode of a typical client message
// (a room:broadcast with a 100-byte event).
func BenchmarkDecodeBroadcast(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchFrame)))
	for b.Loop() {
		if _, err := protocol.Decode(benchFrame); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeBroadcastData: Decode plus the strict DecodeData of the
// broadcast's data, i.e. all the JSON work the server does per broadcast
// before encoding.
func BenchmarkDecodeBroadcastData(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		env, perr := protocol.Decode(benchFrame)
		if perr != nil {
			b.Fatal(perr)
		}
		var d struct {
			RoomID string          `json:"room_id"`
			Event  json.RawMessage `json:"event"`
		}
		if err := protocol.DecodeData(env.Data, &d); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkClientParseEvent: the bench client's own per-delivery cost
// (frame parse + marks), to show the client is not the bottleneck.
func BenchmarkClientParseEvent(b *testing.B) {
	frame := protocol.Encode(protocol.TypeRoomEvent, "", benchData)
	var wire []byte
	for i := 0; i < 64; i++ {
		n := len(frame)
		wire = append(wire, 0x81, 126, byte(n>>8), byte(n))
		wire = append(wire, frame...)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	r := bytes.NewReader(nil)
	c := &wsConn{}
	i := 0
	for b.Loop() {
		if i%64 == 0 {
			r.Reset(wire)
			c.br = newBufReader(r, 32<<10)
			c.skip = 0
		}
		i++
		p, err := c.next()
		if err != nil {
			b.Fatal(err)
		}
		if _, _, _, ok := parseMarks(p); !ok {
			b.Fatal("no marks")
		}
	}
}

// --- end-to-end fan-out through a real in-process server ---

const testSecret = "bench-test-secret-0123456789abcdef"

// startServer runs a real server (server.New, SQLite in a temp dir, real
// listener) for a benchmark; servertest.Start only takes *testing.T.
func startServer(tb testing.TB, env map[string]string) string {
	tb.Helper()
	vars := map[string]string{
		"PARLEY_DATA_DIR":       tb.TempDir(),
		"PARLEY_AUTH_SECRET":    testSecret,
		"PARLEY_HTTP_ADDR":      "127.0.0.1:0",
		"PARLEY_LOG_LEVEL":      "error",
		"PARLEY_MSG_RATE":       "10000000",
		"PARLEY_MSG_BURST":      "10000000",
		"PARLEY_MSG_BYTES_RATE": "0",
	}
	for k, v := range env {
		vars[k] = v
	}
	cfg, err := config.Load(flag.NewFlagSet("bench", flag.ContinueOnError), func(k string) string { return vars[k] })
	if err != nil {
		tb.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := server.New(context.Background(), cfg, log)
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		tb.Fatal(err)
	}
	srv.Start(ln)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return "ws://" + ln.Addr().String() + "/ws"
}

func testCommon(url string) *common {
	return &common{name: "test", url: url, secret: testSecret, duration: time.Minute, connTimeout: 10 * time.Second,
		quiet: true, stdout: io.Discard, stderr: io.Discard, signer: auth.NewHS256Signer([]byte(testSecret)), room: "bench-room"}
}

// BenchmarkFanout: one publisher, N subscribers in one room of a real
// server on loopback; one op = one event, delivered to N subscribers.
// Reports deliveries/s and ns/delivery (client and server share the
// process and the CPUs, so this is a lower bound for the server alone).
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run("subs="+strconv.Itoa(n), func(b *testing.B) { benchFanout(b, n) })
	}
}

func benchFanout(b *testing.B, subs int) {
	url := startServer(b, nil)
	c := testCommon(url)
	rr := &roomRun{c: c, senders: 1}
	rr.onFrame = func(p *peer, frame []byte, now int64) {
		switch {
		case bytes.HasPrefix(frame, pfxRoomEvent):
			p.delivered++
		case bytes.HasPrefix(frame, pfxAck):
			p.acked.Add(1)
		}
	}
	ctx := context.Background()
	if err := rr.connectPeers(ctx, subs+1, "bf-", func(int) string { return "bench-room" }, 32<<10); err != nil {
		b.Fatal(err)
	}
	defer rr.closeAll()
	rr.settle(100*time.Millisecond, 20*time.Second)
	rr.delivered.Store(0)
	pub := rr.peers[0]
	const window = 512
	msg := func(seq int) []byte {
		return fmt.Appendf(nil, `{"type":"room:broadcast","id":"b%d","data":{"room_id":"bench-room","event":%s}}`, seq, benchEvent)
	}
	var buf []byte
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	sent := 0
	for sent < b.N {
		inflight := int64(sent) - rr.delivered.Load()/int64(subs)
		n := min(int64(b.N-sent), window-inflight, 64)
		if n <= 0 {
			time.Sleep(20 * time.Microsecond)
			continue
		}
		buf = buf[:0]
		for k := int64(0); k < n; k++ {
			buf = appendFrame(buf, ws.OpText, msg(sent))
			sent++
		}
		if err := pub.c.writeRaw(buf); err != nil {
			b.Fatal(err)
		}
	}
	want := int64(b.N) * int64(subs)
	deadline := time.Now().Add(30 * time.Second)
	for rr.delivered.Load() < want {
		if time.Now().After(deadline) {
			b.Fatalf("delivered %d of %d", rr.delivered.Load(), want)
		}
		time.Sleep(50 * time.Microsecond)
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(want)/el.Seconds(), "deliveries/s")
	b.ReportMetric(float64(el.Nanoseconds())/float64(want), "ns/delivery")
}

// --- unit tests of the tool ---

func TestHist(t *testing.T) {
	h := NewHist()
	for v := int64(1); v <= 100000; v++ {
		h.Record(v * 1000) // 1µs .. 100ms
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := q * 100000 * 1000
		got := float64(h.Quantile(q))
		if got < want*0.98 || got > want*1.02 {
			t.Errorf("q%.3f = %.0f, want ≈ %.0f", q, got, want)
		}
	}
	if h.Quantile(1) != 100000*1000 || h.Min != 1000 {
		t.Errorf("max %d min %d", h.Quantile(1), h.Min)
	}
	for _, v := range []int64{0, 1, 127, 128, 129, 255, 256, 1 << 20, 1<<40 + 12345} {
		if got := histValue(histIndex(v)); float64(got) < float64(v)*0.98-1 || float64(got) > float64(v)*1.02+1 {
			t.Errorf("bucket of %d is %d", v, got)
		}
	}
	s := h.sparse().hist()
	if s.N != h.N || s.Quantile(0.99) != h.Quantile(0.99) {
		t.Error("sparse round trip changed the histogram")
	}
}

func TestParseMarks(t *testing.T) {
	for _, f := range []string{
		`{"type":"room:event","data":{"room_id":"r","client_id":"c","user_id":"u","event":{"bts":1234,"bseq":7,"bpub":2,"pad":"xx"}}}`,
		`{"type":"room:presence_updated","data":{"room_id":"r","presence":{"bpub":2,"bseq":7,"bts":1234},"timestamp":"x"}}`,
	} {
		ts, seq, pub, ok := parseMarks([]byte(f))
		if !ok || ts != 1234 || seq != 7 || pub != 2 {
			t.Errorf("%s: %d %d %d %v", f, ts, seq, pub, ok)
		}
	}
	if id := frameID([]byte(`{"type":"ack","id":"b42"}`)); string(id) != "b42" {
		t.Errorf("id %q", id)
	}
	if n, ok := frameIDInt([]byte(`{"type":"room:storage_updated","id":"s42","data":{}}`)); !ok || n != 42 {
		t.Errorf("id int %d %v", n, ok)
	}
}

func TestFrames(t *testing.T) {
	var wire []byte
	big := strings.Repeat("y", 70000)
	for _, p := range []string{"a", strings.Repeat("x", 300), big} {
		// server frames are unmasked
		n := len(p)
		switch {
		case n < 126:
			wire = append(wire, 0x81, byte(n))
		case n <= 0xffff:
			wire = append(wire, 0x81, 126, byte(n>>8), byte(n))
		default:
			wire = append(wire, 0x81, 127, 0, 0, 0, 0, 0, byte(n>>16), byte(n>>8), byte(n))
		}
		wire = append(wire, p...)
	}
	c := &wsConn{br: newBufReader(bytes.NewReader(wire), 1024)}
	for _, want := range []int{1, 300, 70000} {
		p, err := c.next()
		if err != nil || len(p) != want {
			t.Fatalf("got %d bytes, %v; want %d", len(p), err, want)
		}
	}
	// client frames are masked with a zero key
	f := appendFrame(nil, ws.OpText, []byte("hello"))
	if !bytes.Equal(f, []byte{0x81, 0x85, 0, 0, 0, 0, 'h', 'e', 'l', 'l', 'o'}) {
		t.Errorf("frame % x", f)
	}
}

// TestScenarios runs every scenario briefly against a real server and
// checks the JSON result.
func TestScenarios(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real servers")
	}
	s := servertest.Start(t, map[string]string{"PARLEY_MSG_RATE": "100000", "PARLEY_MSG_BURST": "100000", "PARLEY_MSG_BYTES_RATE": "0"})
	cases := [][]string{
		{"fanout", "--subscribers", "20", "--publishers", "2", "--duration", "1s", "--rate", "500"},
		{"fanout", "--subscribers", "5", "--duration", "1s"},
		{"presence", "--clients", "10", "--rate", "10", "--duration", "1s"},
		{"storage", "--writers", "4", "--rooms", "2", "--inflight", "4", "--duration", "1s"},
		{"connections", "--n", "100", "--rate", "0", "--duration", "500ms", "--settle", "100ms"},
		{"connections", "--n", "101", "--rate", "500", "--procs", "2", "--duration", "500ms", "--settle", "100ms"},
	}
	// Large rooms from 6 members on, so that a tiny storm goes through
	// both the small phase (room:joined) and the large one
	// (room:members_changed, room:presence_batch), with and without
	// presence coalescing.
	large := map[string]string{"PARLEY_MSG_RATE": "100000", "PARLEY_MSG_BURST": "100000", "PARLEY_MSG_BYTES_RATE": "0",
		"PARLEY_LARGE_ROOM_MEMBERS": "5", "PARLEY_LARGE_ROOM_INTERVAL": "20ms",
		// batches from 64 bytes on go out compressed to a client that
		// negotiated permessage-deflate (the --compression storm)
		"PARLEY_WS_COMPRESSION_THRESHOLD": "64"}
	sl := servertest.Start(t, large)
	large["PARLEY_PRESENCE_COALESCE"] = "false"
	slOff := servertest.Start(t, large)
	for _, args := range [][]string{
		{"joinstorm", "--clients", "30", "--hold", "300ms"},
		{"joinstorm", "--clients", "30", "--hold", "300ms", "--compression"},
		{"joinstorm", "--clients", "31", "--rate", "300", "--procs", "2", "--hold", "300ms"},
		{"presence", "--clients", "12", "--rate", "20", "--duration", "1s", "--coalesce", "--large-room-members", "5"},
	} {
		cases = append(cases, append(args, "--url", sl.WSURL))
	}
	cases = append(cases, []string{"presence", "--clients", "12", "--rate", "20", "--duration", "1s", "--coalesce", "--large-room-members", "5", "--url", slOff.WSURL})
	for _, args := range cases {
		t.Run(strings.Join(args, "_"), func(t *testing.T) {
			var out, errOut bytes.Buffer
			full := append([]string{}, args...)
			if !slices.Contains(args, "--url") {
				full = append(full, "--url", s.WSURL)
			}
			full = append(full, "--secret", servertest.Secret, "--json", "--quiet", "--max-error-rate", "0")
			code := Main(full, &out, &errOut)
			if code != 0 {
				t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out.String(), errOut.String())
			}
			var r Result
			if err := json.Unmarshal(out.Bytes(), &r); err != nil {
				t.Fatalf("bad JSON %q: %v", out.String(), err)
			}
			coalescing := slices.Contains(args, "--coalesce") && slices.Contains(args, sl.WSURL)
			switch args[0] {
			case "joinstorm":
				want, _ := strconv.Atoi(args[2])
				j := r.Join
				if j == nil || j.Joined != want || j.Refused != 0 || j.Failed != 0 || j.Converged != want ||
					r.JoinTime == nil || r.JoinTime.Count != uint64(want) || j.JoinsPerSec <= 0 || r.Server == nil {
					t.Fatalf("join stats %+v, join time %+v, server %+v", j, r.JoinTime, r.Server)
				}
				// Every client got its room:state and at least one frame
				// telling it of later joins (but the last one).
				if j.FramesPerClient.Min < 1 || j.FramesTotal < int64(want) || j.BytesTotal <= 0 {
					t.Errorf("frames %+v total %d bytes %d", j.FramesPerClient, j.FramesTotal, j.BytesTotal)
				}
			case "presence":
				if r.Delivered == 0 || r.Drops != 0 || r.Undelivered != 0 || r.Latency.Count == 0 || r.PresenceFrames == 0 {
					t.Errorf("delivered %d, drops %d, undelivered %d, frames %d", r.Delivered, r.Drops, r.Undelivered, r.PresenceFrames)
				}
				if coalescing {
					// batches: entries are counted one by one, and fewer
					// frames than deliveries arrive
					if r.PresenceBatches == 0 || r.Expected != 0 || r.PresenceFrames >= r.Delivered {
						t.Errorf("coalesced: batches %d, expected %d, frames %d, delivered %d", r.PresenceBatches, r.Expected, r.PresenceFrames, r.Delivered)
					}
				} else if r.PresenceBatches != 0 || r.Delivered != r.Expected || r.PresenceFrames != r.Delivered {
					t.Errorf("not coalesced: batches %d, delivered %d of %d, frames %d", r.PresenceBatches, r.Delivered, r.Expected, r.PresenceFrames)
				}
			}
			switch args[0] {
			case "fanout":
				if r.Delivered == 0 || r.Delivered != r.Expected || r.Drops != 0 || r.Latency.Count == 0 {
					t.Errorf("delivered %d of %d, drops %d", r.Delivered, r.Expected, r.Drops)
				}
			case "storage":
				if r.Acked == 0 || r.Acked != r.Sent || r.AckLatency.Count != uint64(r.Acked) {
					t.Errorf("acked %d of %d", r.Acked, r.Sent)
				}
			case "connections":
				want, _ := strconv.Atoi(args[2])
				if r.Connected != want || r.ConnectTime.Count != uint64(want) || r.Server == nil || r.ConnectRate <= 0 {
					t.Errorf("connected %d, server %+v", r.Connected, r.Server)
				}
			}
		})
	}
}

func TestUsage(t *testing.T) {
	t.Setenv("PARLEY_AUTH_SECRET", "")
	var out, errOut bytes.Buffer
	if Main(nil, &out, &errOut) != 2 || !strings.Contains(errOut.String(), "scenarios:") {
		t.Error("no usage")
	}
	errOut.Reset()
	if Main([]string{"fanout", "--url", "ws://127.0.0.1:1/ws"}, &out, &errOut) != 2 {
		t.Error("missing secret accepted")
	}
}

// TestSeveralServers: --url a,b spreads the clients round-robin and
// reports each server (two independent servers here; the cluster case is
// internal/clustertest's TestClusterBenchFanout).
func TestSeveralServers(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real servers")
	}
	env := map[string]string{"PARLEY_MSG_RATE": "100000", "PARLEY_MSG_BURST": "100000", "PARLEY_MSG_BYTES_RATE": "0"}
	a, b := servertest.Start(t, env), servertest.Start(t, env)
	urls := a.WSURL + "," + b.WSURL
	run := func(args ...string) Result {
		t.Helper()
		var out, errOut bytes.Buffer
		full := append(args, "--url", urls, "--secret", servertest.Secret, "--json", "--quiet", "--max-error-rate", "0")
		if code := Main(full, &out, &errOut); code != 0 {
			t.Fatalf("%v: exit %d\nstdout: %s\nstderr: %s", args, code, out.String(), errOut.String())
		}
		var r Result
		if err := json.Unmarshal(out.Bytes(), &r); err != nil {
			t.Fatalf("bad JSON %q: %v", out.String(), err)
		}
		if len(r.Nodes) != 2 || r.Nodes[0].URL != a.WSURL || r.Nodes[1].URL != b.WSURL {
			t.Fatalf("%v: nodes %+v", args, r.Nodes)
		}
		return r
	}

	r := run("connections", "--n", "11", "--rate", "0", "--duration", "300ms", "--settle", "100ms")
	if r.Connected != 11 || r.Nodes[0].Clients != 6 || r.Nodes[1].Clients != 5 {
		t.Errorf("connections: %d connected, per server %d/%d; want 11, 6/5", r.Connected, r.Nodes[0].Clients, r.Nodes[1].Clients)
	}
	if r.Server == nil || r.Nodes[0].Server == nil || r.Nodes[1].Server == nil {
		t.Fatalf("connections: no server usage: %+v %+v", r.Server, r.Nodes)
	}
	// Both servers run in this process: their /metrics each report it.
	if sum := r.Nodes[0].Server.CPUSeconds + r.Nodes[1].Server.CPUSeconds; math.Abs(sum-r.Server.CPUSeconds) > 0.015 {
		t.Errorf("server cpu %.2f is not the sum of %.2f and %.2f", r.Server.CPUSeconds, r.Nodes[0].Server.CPUSeconds, r.Nodes[1].Server.CPUSeconds)
	}

	// Independent servers: each writer's room lives on its own server,
	// so every batch is acknowledged; writers 0 and 2 on a, 1 and 3 on b.
	r = run("storage", "--writers", "4", "--rooms", "4", "--inflight", "2", "--duration", "500ms")
	if r.Acked == 0 || r.Acked != r.Sent {
		t.Errorf("storage: acked %d of %d", r.Acked, r.Sent)
	}
	for k, n := range r.Nodes {
		if n.Clients != 2 || n.AckLatency == nil || n.AckLatency.Count == 0 {
			t.Errorf("storage, server %d: %d clients, ack latency %+v", k, n.Clients, n.AckLatency)
		}
	}

	// One pid or metrics URL per server.
	for _, bad := range [][]string{
		{"--server-pid", strconv.Itoa(os.Getpid())},
		{"--metrics-url", a.URL + "/metrics"},
		{"--server-pid", "1,x"},
	} {
		var out, errOut bytes.Buffer
		args := append([]string{"fanout", "--url", urls, "--secret", servertest.Secret}, bad...)
		if code := Main(args, &out, &errOut); code != 2 {
			t.Errorf("%v: exit %d (%s), want 2", bad, code, errOut.String())
		}
	}
}
