package media

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/ice/v4"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"

	"github.com/parleyhq/parley/internal/protocol"
)

// ---- fake hub ----

type frame struct {
	Type string          `json:"type"`
	ID   string          `json:"id"`
	Data json.RawMessage `json:"data"`
}

type fakeSender struct {
	mu     sync.Mutex
	frames map[string][]frame
	all    []string // "conn type" in order
	notify chan struct{}
	hook   func(connID string, fr frame) // called before recording, outside f.mu
}

func newFakeSender() *fakeSender {
	return &fakeSender{frames: map[string][]frame{}, notify: make(chan struct{}, 1)}
}

func (f *fakeSender) SendToConnection(connID string, b []byte) bool {
	var fr frame
	if err := json.Unmarshal(b, &fr); err != nil {
		panic(fmt.Sprintf("frame is not JSON: %s", b))
	}
	if f.hook != nil {
		f.hook(connID, fr)
	}
	f.mu.Lock()
	f.frames[connID] = append(f.frames[connID], fr)
	f.all = append(f.all, connID+" "+fr.Type)
	f.mu.Unlock()
	select {
	case f.notify <- struct{}{}:
	default:
	}
	return true
}

func (f *fakeSender) of(connID string) []frame {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]frame(nil), f.frames[connID]...)
}

func (f *fakeSender) typesOf(connID string) []string {
	var out []string
	for _, fr := range f.of(connID) {
		out = append(out, fr.Type)
	}
	return out
}

func (f *fakeSender) reset() {
	f.mu.Lock()
	f.frames = map[string][]frame{}
	f.all = nil
	f.mu.Unlock()
}

// last returns the last frame of that type sent to connID.
func (f *fakeSender) last(connID, typ string) (frame, bool) {
	fs := f.of(connID)
	for i := len(fs) - 1; i >= 0; i-- {
		if fs[i].Type == typ {
			return fs[i], true
		}
	}
	return frame{}, false
}

type fakeEvents struct {
	mu  sync.Mutex
	log []string
}

func (e *fakeEvents) add(s string) { e.mu.Lock(); e.log = append(e.log, s); e.mu.Unlock() }
func (e *fakeEvents) CallStarted(roomID, by string) {
	e.add("started " + roomID + " " + by)
}
func (e *fakeEvents) CallUpdated(roomID string, n int) {
	e.add(fmt.Sprintf("updated %s %d", roomID, n))
}
func (e *fakeEvents) CallEnded(roomID string) { e.add("ended " + roomID) }
func (e *fakeEvents) all() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.log...)
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("PARLEY_MEDIA_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func newTestSFU(t testing.TB, cfg Config) (*SFU, *fakeSender, *fakeEvents) {
	t.Helper()
	if cfg.ListenIP == "" {
		cfg.ListenIP = "127.0.0.1"
	}
	cfg.IncludeLoopback = true
	if cfg.Workers == 0 {
		cfg.Workers = 2
	}
	snd, ev := newFakeSender(), &fakeEvents{}
	s, err := New(cfg, snd, ev, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, snd, ev
}

// handle calls SFU.Handle with a JSON-encodable data value.
func handle(t testing.TB, s *SFU, connID, userID, typ, reqID string, data any) error {
	t.Helper()
	raw, err := json.Marshal(data)
	if err != nil {
		t.Fatal(err)
	}
	return s.Handle(context.Background(), connID, userID, typ, reqID, raw)
}

func mustHandle(t testing.TB, s *SFU, connID, userID, typ, reqID string, data any) {
	t.Helper()
	if err := handle(t, s, connID, userID, typ, reqID, data); err != nil {
		t.Fatalf("%s from %s: %v", typ, connID, err)
	}
}

func errCode(err error) string {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		return pe.Code
	}
	if err == nil {
		return ""
	}
	return "non-protocol: " + err.Error()
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// joined is what media:join returned to one connection.
type joined struct {
	Send, Recv TransportInfo
	Servers    []IceServer
	ForceRelay bool
}

func joinCall(t testing.TB, s *SFU, snd *fakeSender, room, conn, user string) joined {
	t.Helper()
	mustHandle(t, s, conn, user, TypeJoin, "j-"+conn, map[string]string{"room_id": room})
	fr, ok := snd.last(conn, TypeTransportCreated)
	if !ok {
		t.Fatalf("no transport_created for %s", conn)
	}
	var tc struct {
		SendTransport TransportInfo `json:"send_transport"`
		RecvTransport TransportInfo `json:"recv_transport"`
		IceServers    []IceServer   `json:"ice_servers"`
		ForceRelay    bool          `json:"force_relay"`
	}
	if err := json.Unmarshal(fr.Data, &tc); err != nil {
		t.Fatal(err)
	}
	return joined{tc.SendTransport, tc.RecvTransport, tc.IceServers, tc.ForceRelay}
}

// ---- a minimal pion client: full ICE agent (controlling), DTLS client, SRTP ----

type testClient struct {
	agent   *ice.Agent
	cert    *certificate
	info    TransportInfo
	tcpOnly bool

	conn  *ice.Conn
	dc    *dtls.Conn
	ep    *dtlsEndpoint
	encMu sync.Mutex
	enc   *srtp.Context
	dec   *srtp.Context
	ready atomic.Bool
	wg    sync.WaitGroup

	onRTP  func(*rtp.Packet)
	onRTCP func([]rtcp.Packet)
}

func newTestClient(t testing.TB, info TransportInfo) *testClient {
	t.Helper()
	cert, err := newCertificate()
	if err != nil {
		t.Fatal(err)
	}
	// A client given only TCP candidates (onlyTCP) is a TCP-only client
	// (active ICE-TCP candidates, no UDP at all); otherwise it uses UDP and
	// ignores the server's TCP candidates.
	tcpOnly := len(info.IceCandidates) > 0
	for _, rc := range info.IceCandidates {
		if rc.Protocol != "tcp" {
			tcpOnly = false
		}
	}
	network := ice.NetworkTypeUDP4
	if tcpOnly {
		network = ice.NetworkTypeTCP4
	}
	agent, err := ice.NewAgentWithOptions(
		ice.WithNetworkTypes([]ice.NetworkType{network}),
		ice.WithCandidateTypes([]ice.CandidateType{ice.CandidateTypeHost}),
		ice.WithMulticastDNSMode(ice.MulticastDNSModeDisabled),
		ice.WithIncludeLoopback(),
		ice.WithCheckInterval(20*time.Millisecond),
		ice.WithInterfaceFilter(func(name string) bool { return name == "lo" }),
		ice.WithLoggerFactory(&pionLogFactory{log: slog.New(slog.DiscardHandler)}),
	)
	if err != nil {
		t.Fatal(err)
	}
	c := &testClient{agent: agent, cert: cert, info: info}
	if err := agent.OnCandidate(func(ice.Candidate) {}); err != nil {
		t.Fatal(err)
	}
	if err := agent.GatherCandidates(); err != nil {
		t.Fatal(err)
	}
	c.tcpOnly = tcpOnly
	c.addRemoteCandidates(t)
	return c
}

// addRemoteCandidates adds the server's loopback candidates (of the
// client's network type) to the agent.
func (c *testClient) addRemoteCandidates(t testing.TB) {
	t.Helper()
	for _, rc := range c.info.IceCandidates {
		if rc.IP != "127.0.0.1" || (rc.Protocol == "tcp") != c.tcpOnly {
			continue
		}
		hc := &ice.CandidateHostConfig{
			Network: "udp", Address: rc.IP, Port: rc.Port, Component: 1, Priority: rc.Priority,
		}
		if c.tcpOnly {
			if rc.TCPType != "passive" {
				t.Fatalf("TCP candidate with tcpType %q", rc.TCPType)
			}
			hc.Network, hc.TCPType = "tcp", ice.TCPTypePassive
		}
		cand, err := ice.NewCandidateHost(hc)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.agent.AddRemoteCandidate(cand); err != nil {
			t.Fatal(err)
		}
	}
}

// onlyTCP keeps the server's TCP candidates only, making newTestClient a
// TCP-only client.
func onlyTCP(t testing.TB, info TransportInfo) TransportInfo {
	t.Helper()
	var cs []IceCandidate
	for _, c := range info.IceCandidates {
		if c.Protocol == "tcp" {
			cs = append(cs, c)
		}
	}
	if len(cs) == 0 {
		t.Fatalf("transport %s offers no TCP candidate: %+v", info.ID, info.IceCandidates)
	}
	info.IceCandidates = cs
	return info
}

func (c *testClient) dtlsParameters() DtlsParameters {
	return DtlsParameters{Role: "client", Fingerprints: []DtlsFingerprint{{Algorithm: "sha-256", Value: c.cert.sha256}}}
}

// connect runs ICE and the DTLS handshake (the server must already have the
// client's DTLS parameters, as after media:connect_transport).
func (c *testClient) connect(ctx context.Context) error {
	conn, err := c.agent.Dial(ctx, c.info.IceParameters.UsernameFragment, c.info.IceParameters.Password)
	if err != nil {
		return fmt.Errorf("ice: %w", err)
	}
	c.conn = conn
	c.ep = newDTLSEndpoint(conn.Write, conn.LocalAddr(), conn.RemoteAddr())
	c.wg.Add(1)
	go c.readLoop()
	want := c.info.DtlsParameters.Fingerprints[0].Value
	dc, err := dtls.ClientWithOptions(c.ep, c.ep.remote,
		dtls.WithCertificates(c.cert.tls),
		dtls.WithSRTPProtectionProfiles(dtls.SRTP_AEAD_AES_128_GCM, dtls.SRTP_AES128_CM_HMAC_SHA1_80),
		dtls.WithInsecureSkipVerify(true),
		dtls.WithVerifyPeerCertificate(func(raw [][]byte, _ [][]*x509.Certificate) error {
			p := DtlsParameters{Fingerprints: []DtlsFingerprint{{Algorithm: "sha-256", Value: want}}}
			return p.verify(raw)
		}))
	if err != nil {
		return err
	}
	c.dc = dc
	if err := dc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("dtls: %w", err)
	}
	if c.enc, c.dec, err = SRTPContexts(dc, true); err != nil {
		return err
	}
	c.ready.Store(true)
	return nil
}

func (c *testClient) readLoop() {
	defer c.wg.Done()
	buf := make([]byte, 1600)
	for {
		n, err := c.conn.Read(buf)
		if err != nil {
			return
		}
		b := buf[:n]
		switch {
		case n < 2:
		case b[0] >= 20 && b[0] <= 63:
			c.ep.push(b)
		case b[0] >= 128 && b[0] <= 191 && c.ready.Load():
			if b[1] >= 192 && b[1] <= 223 {
				plain, err := c.dec.DecryptRTCP(nil, b, nil)
				if err != nil {
					continue
				}
				if pk, err := rtcp.Unmarshal(plain); err == nil && c.onRTCP != nil {
					c.onRTCP(pk)
				}
			} else {
				plain, err := c.dec.DecryptRTP(nil, b, nil)
				if err != nil {
					continue
				}
				var p rtp.Packet
				if p.Unmarshal(plain) == nil && c.onRTP != nil {
					c.onRTP(&p)
				}
			}
		}
	}
}

func (c *testClient) writeRTP(p *rtp.Packet) error {
	raw, err := p.Marshal()
	if err != nil {
		return err
	}
	c.encMu.Lock()
	out, err := c.enc.EncryptRTP(nil, raw, nil)
	c.encMu.Unlock()
	if err != nil {
		return err
	}
	_, err = c.conn.Write(out)
	return err
}

func (c *testClient) writeRTCP(pkts ...rtcp.Packet) error {
	raw, err := rtcp.Marshal(pkts)
	if err != nil {
		return err
	}
	c.encMu.Lock()
	out, err := c.enc.EncryptRTCP(nil, raw, nil)
	c.encMu.Unlock()
	if err != nil {
		return err
	}
	_, err = c.conn.Write(out)
	return err
}

func (c *testClient) close() {
	if c.dc != nil {
		_ = c.dc.Close()
	}
	if c.ep != nil {
		_ = c.ep.Close()
	}
	_ = c.agent.GracefulClose()
	c.wg.Wait()
}

// connectTransport signals the client's DTLS parameters then runs ICE+DTLS.
func connectClient(t testing.TB, s *SFU, room, conn, user string, info TransportInfo, setup ...func(*testClient)) *testClient {
	t.Helper()
	c := newTestClient(t, info)
	for _, f := range setup {
		f(c)
	}
	mustHandle(t, s, conn, user, TypeConnectTransport, "c-"+info.ID, map[string]any{
		"room_id": room, "transport_id": info.ID, "dtls_parameters": c.dtlsParameters(),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := c.connect(ctx); err != nil {
		c.close()
		t.Fatalf("client connect %s: %v", info.ID, err)
	}
	return c
}

// ---- produce helpers ----

func vp8ProduceParams(ssrc, rtxSSRC uint32) map[string]any {
	return map[string]any{
		"mid": "1",
		"codecs": []map[string]any{
			{"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000, "parameters": map[string]any{},
				"rtcpFeedback": []map[string]any{{"type": "nack"}, {"type": "nack", "parameter": "pli"}, {"type": "transport-cc"}}},
			{"mimeType": "video/rtx", "payloadType": 97, "clockRate": 90000, "parameters": map[string]any{"apt": 96}, "rtcpFeedback": []any{}},
		},
		"headerExtensions": []map[string]any{
			{"uri": extMID, "id": 9, "encrypt": false, "parameters": map[string]any{}},
			{"uri": extAbsSendTime, "id": 2, "encrypt": false, "parameters": map[string]any{}},
			{"uri": extTransportCC, "id": 3, "encrypt": false, "parameters": map[string]any{}},
			{"uri": extVideoOrient, "id": 13, "encrypt": false, "parameters": map[string]any{}},
		},
		"encodings": []map[string]any{{"ssrc": ssrc, "rtx": map[string]any{"ssrc": rtxSSRC}, "active": true}},
		"rtcp":      map[string]any{"cname": "testcname", "reducedSize": true},
	}
}

func opusProduceParams(ssrc uint32) map[string]any {
	return map[string]any{
		"mid": "0",
		"codecs": []map[string]any{
			{"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000, "channels": 2,
				"parameters": map[string]any{"minptime": 10, "useinbandfec": 1}, "rtcpFeedback": []map[string]any{{"type": "transport-cc"}}},
		},
		"headerExtensions": []map[string]any{
			{"uri": extMID, "id": 4, "encrypt": false, "parameters": map[string]any{}},
			{"uri": extTransportCC, "id": 3, "encrypt": false, "parameters": map[string]any{}},
			{"uri": extAudioLevel, "id": 1, "encrypt": false, "parameters": map[string]any{}},
		},
		"encodings": []map[string]any{{"ssrc": ssrc}},
		"rtcp":      map[string]any{"cname": "testcname", "reducedSize": true},
	}
}

// deviceCaps is what a browser device would report: the router's codecs
// and extensions (as mediasoup-client computes them).
func deviceCaps() RtpCapabilities { return RouterCapabilities() }

func produce(t testing.TB, s *SFU, snd *fakeSender, room, conn, user, transportID, kind string, params map[string]any) string {
	t.Helper()
	reqID := fmt.Sprintf("p-%s-%d", conn, time.Now().UnixNano())
	mustHandle(t, s, conn, user, TypeProduce, reqID, map[string]any{
		"room_id": room, "transport_id": transportID, "kind": kind, "rtp_parameters": params,
	})
	fr, ok := snd.last(conn, TypeProduceResult)
	if !ok || fr.ID != reqID {
		t.Fatalf("no produce_result for %s", reqID)
	}
	var r struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(fr.Data, &r)
	return r.ID
}

func consume(t testing.TB, s *SFU, snd *fakeSender, room, conn, user, producerID string) consumerCreated {
	t.Helper()
	reqID := "cons-" + producerID + "-" + conn
	mustHandle(t, s, conn, user, TypeConsume, reqID, map[string]any{
		"room_id": room, "producer_id": producerID, "rtp_capabilities": deviceCaps(),
	})
	fr, ok := snd.last(conn, TypeConsumerCreated)
	if !ok || fr.ID != reqID {
		t.Fatalf("no consumer_created for %s", reqID)
	}
	var cc consumerCreated
	if err := json.Unmarshal(fr.Data, &cc); err != nil {
		t.Fatal(err)
	}
	return cc
}

// vp8Payload is a VP8 payload descriptor + a fake key frame header.
func vp8Payload(n int) []byte {
	b := make([]byte, n)
	b[0] = 0x10 // S=1, PID=0
	b[1] = 0x00 // key frame (P=0)
	b[2], b[3], b[4] = 0x9d, 0x01, 0x2a
	return b
}

// ---- resource counting for leak tests ----

func countUDPSockets() int { return countSockets("/proc/net/udp", "/proc/net/udp6") }

// countTCPSockets counts this process's TCP sockets (listening or
// connected; TIME_WAIT ones have no descriptor).
func countTCPSockets() int { return countSockets("/proc/net/tcp", "/proc/net/tcp6") }

func countSockets(tables ...string) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	udpInodes := map[string]bool{}
	for _, f := range tables {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for i, line := range strings.Split(string(b), "\n") {
			fs := strings.Fields(line)
			if i == 0 || len(fs) < 10 {
				continue
			}
			udpInodes[fs[9]] = true
		}
	}
	n := 0
	for _, e := range ents {
		l, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || !strings.HasPrefix(l, "socket:[") {
			continue
		}
		if udpInodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] {
			n++
		}
	}
	return n
}

func settleGoroutines(t testing.TB, max int, d time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		n := runtime.NumGoroutine()
		if n <= max || time.Now().After(deadline) {
			return n
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var _ = io.EOF

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
