package media

import (
	"encoding/json"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/safe"
)

// panicCounter is a safe.Counter for tests.
type panicCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func newPanicCounter() *panicCounter { return &panicCounter{n: map[string]int{}} }

func (c *panicCounter) Panic(w string) { c.mu.Lock(); c.n[w]++; c.mu.Unlock() }

func (c *panicCounter) get(w safe.Where) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[string(w)]
}

func setHook[T any](t *testing.T, p *atomic.Pointer[T], v T) {
	p.Store(&v)
	t.Cleanup(func() { p.Store(nil) })
}

// Every v1.1 request the SFU does not implement answers unsupported (never
// bad_request, which the gateway counts as a violation) and changes
// nothing; an unknown media:* type stays bad_request.
func TestUnsupportedRequestsAnswerUnsupported(t *testing.T) {
	s, snd, _ := newTestSFU(t, Config{})
	if _, _, err := s.StartCall("r", "u1"); err != nil {
		t.Fatal(err)
	}
	joinCall(t, s, snd, "r", "c1", "u1")
	before, st := len(snd.of("c1")), s.Stats()
	for typ := range unsupportedTypes {
		err := handle(t, s, "c1", "u1", typ, "x", map[string]any{"room_id": "r", "consumer_id": "c", "spatial_layer": 1})
		if errCode(err) != protocol.CodeUnsupported || !strings.Contains(err.Error(), typ) {
			t.Errorf("%s: %v", typ, err)
		}
	}
	if err := handle(t, s, "c1", "u1", "media:bogus", "x", map[string]any{"room_id": "r"}); errCode(err) != protocol.CodeBadRequest {
		t.Errorf("unknown type: %v", err)
	}
	if len(snd.of("c1")) != before || s.Stats() != st {
		t.Fatal("an unsupported request changed something")
	}
}

// A host whose interfaces have no routable IPv4 (only loopback, link-local
// and IPv6): New fails with ErrNoAnnouncedIP unless IncludeLoopback, which
// then announces 127.0.0.1 alone.
func TestNoAnnounceableIP(t *testing.T) {
	ifaces := func() ([]net.Addr, error) {
		return []net.Addr{
			&net.IPNet{IP: net.IPv4(127, 0, 0, 1), Mask: net.CIDRMask(8, 32)},
			&net.IPNet{IP: net.IPv4(169, 254, 3, 4), Mask: net.CIDRMask(16, 32)},
			&net.IPNet{IP: net.ParseIP("2001:db8::1"), Mask: net.CIDRMask(64, 128)},
		}, nil
	}
	_, err := New(Config{ListenIP: "0.0.0.0", Workers: 1, interfaceAddrs: ifaces}, newFakeSender(), nil, nil)
	if !errors.Is(err, ErrNoAnnouncedIP) {
		t.Fatalf("New without an IP: %v", err)
	}
	s, err := New(Config{ListenIP: "0.0.0.0", Workers: 1, IncludeLoopback: true, interfaceAddrs: ifaces}, newFakeSender(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if len(s.candidateIPs) != 1 || s.candidateIPs[0] != "127.0.0.1" {
		t.Fatalf("candidate IPs %v", s.candidateIPs)
	}
}

// Disabled: no call can start, every known media:* request answers
// unsupported with the reason, unknown types stay bad_request, the rest of
// the API sees no call, and the metrics still collect.
func TestDisabledSFU(t *testing.T) {
	s := Disabled("no IPv4 address (set --media-announced-ip)", nil)
	if _, _, err := s.StartCall("r", "u"); errCode(err) != protocol.CodeUnsupported ||
		!strings.Contains(err.Error(), "calls are disabled on this server: no IPv4 address (set --media-announced-ip)") {
		t.Fatalf("StartCall: %v", err)
	}
	for _, typ := range []string{TypeJoin, TypeProduce, TypeLeave, "media:get_stats"} {
		if err := handle(t, s, "c", "u", typ, "x", map[string]any{"room_id": "r"}); errCode(err) != protocol.CodeUnsupported ||
			!strings.Contains(err.Error(), "calls are disabled") {
			t.Errorf("%s: %v", typ, err)
		}
	}
	if err := handle(t, s, "c", "u", "media:bogus", "x", map[string]any{"room_id": "r"}); errCode(err) != protocol.CodeBadRequest {
		t.Errorf("unknown type: %v", err)
	}
	if s.CallActive("r") || s.EndCall("r") || s.JoinCall("r", "c", "u") == nil {
		t.Fatal("a disabled SFU has a call")
	}
	s.Disconnect("c")
	reg := prometheus.NewRegistry()
	reg.MustRegister(s.Collector())
	if v := gatherValue(t, reg, "parley_media_calls", ""); v != 0 {
		t.Fatalf("calls = %v", v)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// gatherValue returns the value of a metric (with kind label when kind is
// not empty); -1 when missing.
func gatherValue(t *testing.T, reg *prometheus.Registry, name, kind string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := kind == ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "kind" && l.GetValue() == kind {
					match = true
				}
			}
			if !match {
				continue
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return -1
}

// A panic in a media:join under the router's lock answers internal, is
// counted, and leaves no lock held: the next join of the same connection
// succeeds.
func TestPanicInSignallingReleasesTheRouterLock(t *testing.T) {
	pc := newPanicCounter()
	s, snd, _ := newTestSFU(t, Config{Panics: pc})
	if _, _, err := s.StartCall("r", "u1"); err != nil {
		t.Fatal(err)
	}
	var once atomic.Bool
	setHook(t, &joinHook, func() {
		if once.CompareAndSwap(false, true) {
			panic("injected signalling panic")
		}
	})
	if err := handle(t, s, "c1", "u1", TypeJoin, "j1", map[string]string{"room_id": "r"}); errCode(err) != protocol.CodeInternal {
		t.Fatalf("join with a panic: %v", err)
	}
	if pc.get(safe.MediaTransport) != 1 {
		t.Fatalf("panics counted: %v", pc.n)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		joinCall(t, s, snd, "r", "c1", "u1")
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("second join blocked: the router lock is still held")
	}
	if st := s.Stats(); st.Participants != 1 || st.Transports != 2 {
		t.Fatalf("stats after the second join: %+v", st)
	}
}

// A panic on one transport's packet path (its read loop) fails only that
// transport: its participant leaves the call (the others get
// media:peer_left), the panic is counted, and the SFU keeps forwarding
// another publisher's packets to the subscriber.
func TestPanicInPacketPathFailsOnlyThatTransport(t *testing.T) {
	pc := newPanicCounter()
	s, snd, _ := newTestSFU(t, Config{Panics: pc})
	const room = "panic-room"
	if _, _, err := s.StartCall(room, "ua"); err != nil {
		t.Fatal(err)
	}
	ja := joinCall(t, s, snd, room, "A", "ua")
	jd := joinCall(t, s, snd, room, "D", "ud")
	jb := joinCall(t, s, snd, room, "B", "ub")
	pubA := connectClient(t, s, room, "A", "ua", ja.Send)
	defer pubA.close()
	pubD := connectClient(t, s, room, "D", "ud", jd.Send)
	defer pubD.close()
	const aSSRC, dSSRC = 0xA1, 0xD1
	aID := produce(t, s, snd, room, "A", "ua", ja.Send.ID, "audio", opusProduceParams(aSSRC))
	dID := produce(t, s, snd, room, "D", "ud", jd.Send.ID, "audio", opusProduceParams(dSSRC))
	ca := consume(t, s, snd, room, "B", "ub", aID)
	cd := consume(t, s, snd, room, "B", "ub", dID)
	var fromA, fromD atomic.Int64
	sub := newTestClient(t, jb.Recv)
	sub.onRTP = func(p *rtp.Packet) {
		switch p.SSRC {
		case ca.RtpParameters.Encodings[0].SSRC:
			fromA.Add(1)
		case cd.RtpParameters.Encodings[0].SSRC:
			fromD.Add(1)
		}
	}
	mustHandle(t, s, "B", "ub", TypeConnectTransport, "cb", map[string]any{
		"room_id": room, "transport_id": jb.Recv.ID, "dtls_parameters": sub.dtlsParameters(),
	})
	ctxConnect(t, sub)
	defer sub.close()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			for _, p := range []struct {
				c    *testClient
				ssrc uint32
			}{{pubA, aSSRC}, {pubD, dSSRC}} {
				_ = p.c.writeRTP(&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: uint16(i),
					Timestamp: uint32(i * 960), SSRC: p.ssrc}, Payload: []byte{0xf8, 0xff, 0xfe}})
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	waitFor(t, 10*time.Second, "packets from both publishers", func() bool { return fromA.Load() >= 10 && fromD.Load() >= 10 })

	setHook(t, &packetHook, func(tr *transport, _ []byte) {
		if tr.id == ja.Send.ID {
			panic("injected packet panic")
		}
	})
	waitFor(t, 10*time.Second, "media:peer_left for A at B", func() bool {
		for _, fr := range snd.of("B") {
			if fr.Type == TypePeerLeft && strings.Contains(string(fr.Data), `"connection_id":"A"`) {
				return true
			}
		}
		return false
	})
	if n := pc.get(safe.MediaPacket); n != 1 {
		t.Fatalf("media_packet panics counted %d, want 1", n)
	}
	if st := s.Stats(); st.Participants != 2 || st.Producers != 1 || st.TransportFailures != 1 {
		t.Fatalf("stats after the failure: %+v", st)
	}
	d0 := fromD.Load()
	waitFor(t, 10*time.Second, "D's packets still forwarded to B", func() bool { return fromD.Load() >= d0+20 })
}

// A panic while forwarding to one subscriber (on the publisher's read
// goroutine) fails that subscriber's transport only: it leaves the call,
// the publisher stays, and another subscriber of the same producer keeps
// receiving.
func TestPanicForwardingToOneConsumerFailsOnlyItsTransport(t *testing.T) {
	pc := newPanicCounter()
	s, snd, _ := newTestSFU(t, Config{Panics: pc})
	const room = "panic-fwd"
	if _, _, err := s.StartCall(room, "ua"); err != nil {
		t.Fatal(err)
	}
	ja := joinCall(t, s, snd, room, "A", "ua")
	pub := connectClient(t, s, room, "A", "ua", ja.Send)
	defer pub.close()
	const aSSRC = 0xA1
	aID := produce(t, s, snd, room, "A", "ua", ja.Send.ID, "audio", opusProduceParams(aSSRC))
	got := map[string]*atomic.Int64{"B": {}, "C": {}}
	for _, conn := range []string{"B", "C"} {
		j := joinCall(t, s, snd, room, conn, "u"+conn)
		cc := consume(t, s, snd, room, conn, "u"+conn, aID)
		n := got[conn]
		sub := newTestClient(t, j.Recv)
		sub.onRTP = func(p *rtp.Packet) {
			if p.SSRC == cc.RtpParameters.Encodings[0].SSRC {
				n.Add(1)
			}
		}
		mustHandle(t, s, conn, "u"+conn, TypeConnectTransport, "c"+conn, map[string]any{
			"room_id": room, "transport_id": j.Recv.ID, "dtls_parameters": sub.dtlsParameters(),
		})
		ctxConnect(t, sub)
		defer sub.close()
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			_ = pub.writeRTP(&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: uint16(i),
				Timestamp: uint32(i * 960), SSRC: aSSRC}, Payload: []byte{0xf8, 0xff, 0xfe}})
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	waitFor(t, 10*time.Second, "packets at both subscribers", func() bool { return got["B"].Load() >= 10 && got["C"].Load() >= 10 })

	setHook(t, &forwardHook, func(c *consumer) {
		if c.owner.connID == "B" {
			panic("injected forwarding panic")
		}
	})
	waitFor(t, 10*time.Second, "media:peer_left for B at A and C", func() bool {
		n := 0
		for _, conn := range []string{"A", "C"} {
			for _, fr := range snd.of(conn) {
				if fr.Type == TypePeerLeft && strings.Contains(string(fr.Data), `"connection_id":"B"`) {
					n++
				}
			}
		}
		return n == 2
	})
	if pc.get(safe.MediaPacket) < 1 {
		t.Fatalf("panics counted: %v", pc.n)
	}
	if st := s.Stats(); st.Participants != 2 || st.Producers != 1 || st.Consumers != 1 || st.TransportFailures != 1 {
		t.Fatalf("stats after the failure: %+v", st)
	}
	c0 := got["C"].Load()
	waitFor(t, 10*time.Second, "A's packets still forwarded to C", func() bool { return got["C"].Load() >= c0+20 })
}

// A panic while sniffing a STUN packet on the shared UDP mux (a node-wide
// reader) is contained and counted; the reader keeps going and the client
// still connects through it.
func TestPanicInSharedMuxSnifferKeepsTheReader(t *testing.T) {
	pc := newPanicCounter()
	s, snd, _ := newTestSFU(t, Config{Panics: pc, UDPMuxPort: freeUDPPort(t)})
	if _, _, err := s.StartCall("r", "u1"); err != nil {
		t.Fatal(err)
	}
	var once atomic.Bool
	setHook(t, &sniffHook, func(b []byte) {
		if stun.IsMessage(b) && once.CompareAndSwap(false, true) {
			panic("injected sniffer panic")
		}
	})
	j := joinCall(t, s, snd, "r", "c1", "u1")
	c := connectClient(t, s, "r", "c1", "u1", j.Send)
	defer c.close()
	if !once.Load() || pc.get(safe.MediaPacket) != 1 {
		t.Fatalf("panic not injected or not counted: %v", pc.n)
	}
	if st := s.Stats(); st.Participants != 1 || st.TransportFailures != 0 {
		t.Fatalf("stats %+v", st)
	}
}

var _ = json.Marshal

// A panic in the TURN credential check (run on pion/turn's node-wide read
// loop) refuses that request and is counted; the next one is answered.
func TestPanicInTURNAuthIsContained(t *testing.T) {
	pc := newPanicCounter()
	s, _, _ := newTestSFU(t, Config{Panics: pc})
	calls := 0
	h := s.recoveringAuth(func(*turnRequest) (string, []byte, bool) {
		calls++
		if calls == 1 {
			panic("injected TURN auth panic")
		}
		return "u", []byte("k"), true
	})
	if _, _, ok := h(&turnRequest{Username: "x"}); ok || pc.get(safe.MediaTransport) != 1 {
		t.Fatalf("first request: ok=%v panics %v", ok, pc.n)
	}
	if u, _, ok := h(&turnRequest{Username: "x"}); !ok || u != "u" {
		t.Fatal("second request refused")
	}
}

type turnRequest = turn.RequestAttributes
