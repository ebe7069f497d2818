package media

import (
	"bytes"
	"encoding/json"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parleyhq/parley/internal/testenv"
)

func TestMediaForwardingRewritesSSRCPayloadTypeAndExtensions(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"ephemeral-ports", Config{}},
		{"port-range", Config{RTCMinPort: 42000, RTCMaxPort: 42009}},
		{"udp-mux", Config{UDPMuxPort: freeUDPPort(t)}},
	} {
		t.Run(tc.name, func(t *testing.T) { testForwarding(t, tc.cfg, false, false) })
	}
}

// TestMediaForwardingOverICETCP: with Config.TCPPort every transport also
// offers a passive TCP candidate; TCP-only pion clients (active ICE-TCP, the
// server's UDP candidates withheld from them) connect, produce and consume
// through it, mixed with a UDP client in the second case.
func TestMediaForwardingOverICETCP(t *testing.T) {
	t.Run("tcp-publisher-tcp-subscriber", func(t *testing.T) {
		testForwarding(t, Config{TCPPort: freeTCPPort(t)}, true, true)
	})
	t.Run("tcp-publisher-udp-mux-subscriber", func(t *testing.T) {
		testForwarding(t, Config{TCPPort: freeTCPPort(t), UDPMuxPort: freeUDPPort(t)}, true, false)
	})
	t.Run("udp-publisher-tcp-subscriber", func(t *testing.T) {
		testForwarding(t, Config{TCPPort: freeTCPPort(t), RTCMinPort: 42010, RTCMaxPort: 42019}, false, true)
	})
}

// freeTCPPort and freeUDPPort: see testenv.FreePort (outside the
// ephemeral range, never twice).
func freeTCPPort(t *testing.T) int { return testenv.FreePort(t, "tcp") }

// checkTCPCandidate checks the shape of the passive TCP candidate offered
// next to the UDP one.
func checkTCPCandidate(t *testing.T, info TransportInfo, port int) {
	t.Helper()
	var udp, tcp *IceCandidate
	for i := range info.IceCandidates {
		c := &info.IceCandidates[i]
		switch c.Protocol {
		case "udp":
			udp = c
		case "tcp":
			tcp = c
		}
	}
	if udp == nil || tcp == nil {
		t.Fatalf("candidates %+v: want one UDP and one TCP", info.IceCandidates)
	}
	if tcp.TCPType != "passive" || tcp.Type != "host" || tcp.Port != port || tcp.IP != "127.0.0.1" || tcp.Address != tcp.IP {
		t.Fatalf("TCP candidate %+v", *tcp)
	}
	if tcp.Priority >= udp.Priority || tcp.Foundation == udp.Foundation {
		t.Fatalf("TCP candidate %+v vs UDP %+v", *tcp, *udp)
	}
	raw, err := json.Marshal(tcp)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	if m["tcpType"] != "passive" || m["protocol"] != "tcp" {
		t.Fatalf("TCP candidate JSON %s", raw)
	}
	if raw, _ := json.Marshal(udp); bytes.Contains(raw, []byte("tcpType")) {
		t.Fatalf("UDP candidate JSON %s", raw)
	}
}

// checkSelected checks which protocol a test client's ICE pair uses.
func checkSelected(t *testing.T, c *testClient, tcp bool) {
	t.Helper()
	_, isTCP := c.conn.RemoteAddr().(*net.TCPAddr)
	if isTCP != tcp {
		t.Fatalf("client selected %s (%T), want TCP=%v", c.conn.RemoteAddr(), c.conn.RemoteAddr(), tcp)
	}
}

func freeUDPPort(t *testing.T) int { return testenv.FreePort(t, "udp") }

func testForwarding(t *testing.T, cfg Config, pubTCP, subTCP bool) {
	s, snd, _ := newTestSFU(t, cfg)
	const room = "media-room"
	if _, _, err := s.StartCall(room, "ua"); err != nil {
		t.Fatal(err)
	}
	ja := joinCall(t, s, snd, room, "A", "ua")
	jb := joinCall(t, s, snd, room, "B", "ub")
	pubInfo, subInfo := ja.Send, jb.Recv
	if cfg.TCPPort != 0 {
		checkTCPCandidate(t, ja.Send, cfg.TCPPort)
		checkTCPCandidate(t, jb.Recv, cfg.TCPPort)
	} else if len(ja.Send.IceCandidates) != 1 || ja.Send.IceCandidates[0].Protocol != "udp" {
		t.Fatalf("candidates without TCPPort: %+v", ja.Send.IceCandidates)
	}
	if pubTCP {
		pubInfo = onlyTCP(t, pubInfo)
	}
	if subTCP {
		subInfo = onlyTCP(t, subInfo)
	}

	pubRTCP := make(chan rtcp.Packet, 256)
	pub := connectClient(t, s, room, "A", "ua", pubInfo, func(c *testClient) {
		c.onRTCP = func(pk []rtcp.Packet) {
			for _, p := range pk {
				select {
				case pubRTCP <- p:
				default:
				}
			}
		}
	})
	defer pub.close()
	const vSSRC, vRTX, aSSRC = 0x1111, 0x2222, 0x3333
	videoID := produce(t, s, snd, room, "A", "ua", ja.Send.ID, "video", vp8ProduceParams(vSSRC, vRTX))
	audioID := produce(t, s, snd, room, "A", "ua", ja.Send.ID, "audio", opusProduceParams(aSSRC))

	vc := consume(t, s, snd, room, "B", "ub", videoID)
	ac := consume(t, s, snd, room, "B", "ub", audioID)
	if vc.RtpParameters.Codecs[0].PayloadType != 101 || ac.RtpParameters.Codecs[0].PayloadType != 100 {
		t.Fatalf("consumer payload types: video %d audio %d", vc.RtpParameters.Codecs[0].PayloadType, ac.RtpParameters.Codecs[0].PayloadType)
	}
	vcSSRC := vc.RtpParameters.Encodings[0].SSRC
	vcRTX := vc.RtpParameters.Encodings[0].RTX.SSRC
	acSSRC := ac.RtpParameters.Encodings[0].SSRC

	var mu sync.Mutex
	var gotVideo, gotAudio []*rtp.Packet
	var gotRTX atomic.Pointer[rtp.Packet]
	sub := newTestClient(t, subInfo)
	sub.onRTP = func(p *rtp.Packet) {
		cp := p.Clone()
		mu.Lock()
		defer mu.Unlock()
		switch p.SSRC {
		case vcSSRC:
			gotVideo = append(gotVideo, cp)
		case acSSRC:
			gotAudio = append(gotAudio, cp)
		case vcRTX:
			gotRTX.Store(cp)
		default:
			t.Errorf("unexpected SSRC %x", p.SSRC)
		}
	}
	mustHandle(t, s, "B", "ub", TypeConnectTransport, "cb", map[string]any{
		"room_id": room, "transport_id": jb.Recv.ID, "dtls_parameters": sub.dtlsParameters(),
	})
	ctxConnect(t, sub)
	defer sub.close()
	checkSelected(t, pub, pubTCP)
	checkSelected(t, sub, subTCP)

	// A key frame is requested for the new video consumer.
	waitPLI := func(what string) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case p := <-pubRTCP:
				if pli, ok := p.(*rtcp.PictureLossIndication); ok && pli.MediaSSRC == vSSRC {
					return
				}
			case <-deadline:
				t.Fatalf("no PLI for %s", what)
			}
		}
	}
	waitPLI("new consumer")

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		seq := uint16(1000)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			v := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, Timestamp: uint32(i * 3000), SSRC: vSSRC, Marker: true}, Payload: vp8Payload(300)}
			_ = v.SetExtension(13, []byte{0x01})
			_ = v.SetExtension(9, []byte("1"))
			_ = v.SetExtension(3, []byte{0, byte(i)})
			_ = pub.writeRTP(v)
			a := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: seq, Timestamp: uint32(i * 960), SSRC: aSSRC}, Payload: []byte{0xf8, 0xff, 0xfe}}
			_ = a.SetExtension(1, []byte{0x85})
			_ = pub.writeRTP(a)
			seq++
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	waitFor(t, 10*time.Second, "20 video and 20 audio packets at the consumer", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(gotVideo) >= 20 && len(gotAudio) >= 20
	})
	mu.Lock()
	v, a := gotVideo[0], gotAudio[0]
	mu.Unlock()
	if v.PayloadType != 101 || a.PayloadType != 100 {
		t.Fatalf("forwarded payload types video %d audio %d, want 101/100", v.PayloadType, a.PayloadType)
	}
	if !bytes.Equal(v.Payload, vp8Payload(300)) {
		t.Fatal("video payload changed")
	}
	if got := v.GetExtension(11); !bytes.Equal(got, []byte{0x01}) {
		t.Fatalf("video-orientation not rewritten to id 11: %v (ids %v)", got, v.GetExtensionIDs())
	}
	if v.GetExtension(13) != nil || v.GetExtension(9) != nil {
		t.Fatalf("client extension ids leaked: %v", v.GetExtensionIDs())
	}
	if v.GetExtension(5) == nil || v.GetExtension(4) == nil {
		t.Fatalf("consumer transport-cc/abs-send-time missing: ids %v", v.GetExtensionIDs())
	}
	if got := a.GetExtension(10); !bytes.Equal(got, []byte{0x85}) {
		t.Fatalf("audio level not at id 10: %v (ids %v)", got, a.GetExtensionIDs())
	}

	// Consumer PLI reaches the producer.
	drain(pubRTCP)
	time.Sleep(350 * time.Millisecond) // past the PLI throttle window
	if err := sub.writeRTCP(&rtcp.PictureLossIndication{SenderSSRC: 9, MediaSSRC: vcSSRC}); err != nil {
		t.Fatal(err)
	}
	waitPLI("consumer PLI")

	// Consumer NACK → RTX from the retransmission buffer.
	mu.Lock()
	nackSeq := gotVideo[len(gotVideo)-1].SequenceNumber
	mu.Unlock()
	if err := sub.writeRTCP(&rtcp.TransportLayerNack{SenderSSRC: 9, MediaSSRC: vcSSRC,
		Nacks: rtcp.NackPairsFromSequenceNumbers([]uint16{nackSeq})}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "RTX retransmission", func() bool { return gotRTX.Load() != nil })
	rtx := gotRTX.Load()
	if rtx.PayloadType != 102 || len(rtx.Payload) < 2 || uint16(rtx.Payload[0])<<8|uint16(rtx.Payload[1]) != nackSeq {
		t.Fatalf("bad RTX packet: pt %d payload %x", rtx.PayloadType, rtx.Payload[:4])
	}

	// Transport-wide-cc feedback flows back to the producer.
	waitFor(t, 5*time.Second, "transport-cc feedback at the producer", func() bool {
		for {
			select {
			case p := <-pubRTCP:
				if _, ok := p.(*rtcp.TransportLayerCC); ok {
					return true
				}
			default:
				return false
			}
		}
	})
	if cfg.UDPMuxPort != 0 && (ja.Send.IceCandidates[0].Port != cfg.UDPMuxPort || jb.Recv.IceCandidates[0].Port != cfg.UDPMuxPort) {
		t.Fatalf("udp mux: candidates on ports %d/%d", ja.Send.IceCandidates[0].Port, jb.Recv.IceCandidates[0].Port)
	}
	if cfg.RTCMinPort != 0 {
		for _, p := range []int{ja.Send.IceCandidates[0].Port, jb.Recv.IceCandidates[0].Port} {
			if p < int(cfg.RTCMinPort) || p > int(cfg.RTCMaxPort) {
				t.Fatalf("port %d outside the range", p)
			}
		}
	}
	st := s.Stats()
	if st.RTPIn == 0 || st.RTPOut == 0 || st.Consumers != 2 || st.Producers != 2 {
		t.Fatalf("stats %+v", st)
	}
	checkMediaMetrics(t, s)
}

// checkMediaMetrics: the SFU's collector reports the call of testForwarding
// (one call, two participants, four transports, one producer and consumer
// per kind) and the packets forwarded so far (at least the 20 per kind
// the subscriber received, 3 payload bytes per audio packet, 300 per video
// packet).
func checkMediaMetrics(t *testing.T, s *SFU) {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(s.Collector())
	for _, m := range []struct {
		name, kind string
		want       float64
	}{
		{"parley_media_calls", "", 1}, {"parley_media_participants", "", 2}, {"parley_media_transports", "", 4},
		{"parley_media_producers", "audio", 1}, {"parley_media_producers", "video", 1},
		{"parley_media_consumers", "audio", 1}, {"parley_media_consumers", "video", 1},
		{"parley_media_transport_failures_total", "", 0},
	} {
		if got := gatherValue(t, reg, m.name, m.kind); got != m.want {
			t.Errorf("%s{kind=%q} = %v, want %v", m.name, m.kind, got, m.want)
		}
	}
	for _, k := range []struct {
		kind    string
		payload float64
	}{{"audio", 3}, {"video", 300}} {
		pk := gatherValue(t, reg, "parley_media_forwarded_packets_total", k.kind)
		by := gatherValue(t, reg, "parley_media_forwarded_bytes_total", k.kind)
		// Forwarding still runs: bytes are read after packets and added
		// after them, so they may lag by at most one packet.
		if pk < 20 || by < (pk-1)*k.payload || int(by)%int(k.payload) != 0 {
			t.Errorf("%s forwarded: %v packets, %v bytes", k.kind, pk, by)
		}
	}
}

func drain[T any](c chan T) {
	for {
		select {
		case <-c:
		default:
			return
		}
	}
}

func ctxConnect(t testing.TB, c *testClient) {
	t.Helper()
	ctx, cancel := contextWithTimeout(15 * time.Second)
	defer cancel()
	if err := c.connect(ctx); err != nil {
		c.close()
		t.Fatalf("connect: %v", err)
	}
}
