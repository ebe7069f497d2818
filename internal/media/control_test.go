package media

import (
	"encoding/json"
	"fmt"
	"reflect"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/prometheus/client_golang/prometheus"
)

// ---- helpers for the control tests ----

// call is one call with a publisher A (video + audio, sending) and a
// subscriber B consuming both, over real ICE/DTLS/SRTP.
type call struct {
	t                *testing.T
	s                *SFU
	snd              *fakeSender
	room             string
	ja, jb           joined
	pub, sub         *testClient
	pubRTCP          chan rtcp.Packet
	videoID, audioID string
	vc, ac           consumerCreated

	mu       sync.Mutex
	got      map[uint32]int // packets received by B by SSRC
	lastSR   atomic.Pointer[rtcp.SenderReport]
	level    atomic.Int32 // audio level A sends (0..127)
	skipEach atomic.Int32 // A skips every n-th sequence number (0: none)
	stop     chan struct{}
	wg       sync.WaitGroup
}

const (
	tVideoSSRC, tVideoRTX, tAudioSSRC = 0x1111, 0x2222, 0x3333
)

func newCall(t *testing.T, cfg Config) *call {
	t.Helper()
	s, snd, _ := newTestSFU(t, cfg)
	c := &call{t: t, s: s, snd: snd, room: "ctl-room", got: map[uint32]int{}, stop: make(chan struct{}),
		pubRTCP: make(chan rtcp.Packet, 1024)}
	c.level.Store(127)
	if _, _, err := s.StartCall(c.room, "ua"); err != nil {
		t.Fatal(err)
	}
	c.ja = joinCall(t, s, snd, c.room, "A", "ua")
	c.jb = joinCall(t, s, snd, c.room, "B", "ub")
	c.pub = connectClient(t, s, c.room, "A", "ua", c.ja.Send, func(tc *testClient) {
		tc.onRTCP = func(pk []rtcp.Packet) {
			for _, p := range pk {
				select {
				case c.pubRTCP <- p:
				default:
				}
			}
		}
	})
	t.Cleanup(c.pub.close)
	c.videoID = produce(t, s, snd, c.room, "A", "ua", c.ja.Send.ID, "video", vp8ProduceParams(tVideoSSRC, tVideoRTX))
	c.audioID = produce(t, s, snd, c.room, "A", "ua", c.ja.Send.ID, "audio", opusProduceParams(tAudioSSRC))
	c.vc = consume(t, s, snd, c.room, "B", "ub", c.videoID)
	c.ac = consume(t, s, snd, c.room, "B", "ub", c.audioID)
	c.sub = c.connectSub("B", "ub", c.jb.Recv)
	c.startSending()
	t.Cleanup(c.stopSending)
	return c
}

// connectSub connects a receiving client that counts packets by SSRC and
// keeps the last SR.
func (c *call) connectSub(conn, user string, info TransportInfo) *testClient {
	sub := connectClient(c.t, c.s, c.room, conn, user, info, func(tc *testClient) {
		tc.onRTP = func(p *rtp.Packet) {
			c.mu.Lock()
			c.got[p.SSRC]++
			c.mu.Unlock()
		}
		tc.onRTCP = func(pk []rtcp.Packet) {
			for _, p := range pk {
				if sr, ok := p.(*rtcp.SenderReport); ok {
					c.lastSR.Store(sr)
				}
			}
		}
	})
	c.t.Cleanup(sub.close)
	return sub
}

func (c *call) received(ssrc uint32) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.got[ssrc]
}

// startSending sends a VP8 and an opus packet every 5 ms, and an SR for
// each every 50 packets.
func (c *call) startSending() {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		vseq, aseq := uint16(1000), uint16(5000)
		for i := 0; ; i++ {
			select {
			case <-c.stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if n := c.skipEach.Load(); n > 0 && i%int(n) == 0 {
				vseq++ // lost on the way
			}
			v := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: vseq, Timestamp: uint32(i * 3000), SSRC: tVideoSSRC, Marker: true}, Payload: vp8Payload(300)}
			_ = v.SetExtension(3, []byte{byte(i >> 8), byte(i)})
			_ = c.pub.writeRTP(v)
			a := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: aseq, Timestamp: uint32(i * 960), SSRC: tAudioSSRC}, Payload: []byte{0xf8, 0xff, 0xfe}}
			_ = a.SetExtension(1, []byte{byte(c.level.Load())})
			_ = c.pub.writeRTP(a)
			vseq++
			aseq++
			if i%50 == 0 {
				now := uint64(time.Now().UnixNano())
				_ = c.pub.writeRTCP(&rtcp.SenderReport{SSRC: tVideoSSRC, NTPTime: now, RTPTime: uint32(i * 3000)})
			}
		}
	}()
}

func (c *call) stopSending() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	c.wg.Wait()
}

// serverConsumer and serverProducer find the SFU's objects.
func (s *SFU) serverConsumer(room, id string) *consumer {
	r, _ := s.routerFor(room)
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.participants {
		if c := p.consumers[id]; c != nil {
			return c
		}
	}
	return nil
}

func (s *SFU) serverTransport(room, id string) *transport {
	r, _ := s.routerFor(room)
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.transports[id]
}

// afterPackets waits until the SFU has read n more packets from A's send
// transport: every packet read before is handled by then (one read
// goroutine per transport).
func (c *call) afterPackets(n uint64) {
	c.t.Helper()
	t := c.s.serverTransport(c.room, c.ja.Send.ID)
	from := t.rtpIn.Load()
	waitFor(c.t, 10*time.Second, "packets at the SFU", func() bool { return t.rtpIn.Load() >= from+n })
}

// waitPLI waits for a PLI for A's video at the publisher.
func (c *call) waitPLI(what string) {
	c.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case p := <-c.pubRTCP:
			if pli, ok := p.(*rtcp.PictureLossIndication); ok && pli.MediaSSRC == tVideoSSRC {
				return
			}
		case <-deadline:
			c.t.Fatalf("no PLI for %s", what)
		}
	}
}

// stopped checks that the server-side consumer forwards nothing more while
// A keeps sending, and returns its count.
func (c *call) stopped(sc *consumer, what string) uint64 {
	c.t.Helper()
	c.afterPackets(20) // what was in flight when paused is through
	n := sc.packets.Load()
	c.afterPackets(60)
	if got := sc.packets.Load(); got != n {
		c.t.Fatalf("%s: %d packets forwarded while paused", what, got-n)
	}
	return n
}

func frameData(t *testing.T, fr frame) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(fr.Data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// ---- pause / resume ----

// Producer pause stops forwarding at the producer (nothing reaches any
// consumer, the consumers' connections are told once each), resume starts
// it again with a key-frame request; consumer pause stops that consumer
// only, resume asks for a key frame; a paused consume starts with nothing
// until consumer_resume. Only the owner may pause; a repeated pause is
// acked without a second notification.
func TestPauseResume(t *testing.T) {
	c := newCall(t, Config{})
	s, snd := c.s, c.snd
	waitFor(t, 10*time.Second, "media at B", func() bool {
		return c.received(c.vc.RtpParameters.Encodings[0].SSRC) > 20 && c.received(c.ac.RtpParameters.Encodings[0].SSRC) > 20
	})
	sv, sa := s.serverConsumer(c.room, c.vc.ID), s.serverConsumer(c.room, c.ac.ID)

	// Only the owner pauses its producer; unknown ids are not_found.
	if err := handle(t, s, "B", "ub", TypeProducerPause, "x", map[string]string{"room_id": c.room, "producer_id": c.videoID}); errCode(err) != "not_found" {
		t.Fatalf("pause someone else's producer: %v", err)
	}
	if err := handle(t, s, "A", "ua", TypeConsumerPause, "x", map[string]string{"room_id": c.room, "consumer_id": c.vc.ID}); errCode(err) != "not_found" {
		t.Fatalf("pause someone else's consumer: %v", err)
	}
	if err := handle(t, s, "A", "ua", TypeProducerPause, "x", map[string]string{"room_id": c.room}); errCode(err) != "bad_request" {
		t.Fatalf("pause without id: %v", err)
	}

	// Producer pause.
	snd.reset()
	mustHandle(t, s, "A", "ua", TypeProducerPause, "pp", map[string]string{"room_id": c.room, "producer_id": c.videoID})
	if got := snd.of("A"); len(got) != 1 || got[0].Type != "ack" || got[0].ID != "pp" {
		t.Fatalf("A after producer_pause: %v", snd.typesOf("A"))
	}
	fr, ok := snd.last("B", TypeProducerPaused)
	if want := map[string]any{"producer_id": c.videoID, "user_id": "ua"}; !ok || !reflect.DeepEqual(frameData(t, fr), want) {
		t.Fatalf("B: producer_paused %s (frames %v)", fr.Data, snd.typesOf("B"))
	}
	c.stopped(sv, "paused producer")
	audioBefore := sa.packets.Load()
	c.afterPackets(20)
	if sa.packets.Load() <= audioBefore {
		t.Fatal("the audio consumer stopped with the video producer")
	}
	mustHandle(t, s, "A", "ua", TypeProducerPause, "pp2", map[string]string{"room_id": c.room, "producer_id": c.videoID})
	if n := len(snd.typesOf("B")); n != 1 {
		t.Fatalf("a second pause notified again: %v", snd.typesOf("B"))
	}
	// A late consumer of the paused producer learns it from consumer_created.
	jc := joinCall(t, s, snd, c.room, "C", "uc")
	_ = jc
	cc := consume(t, s, snd, c.room, "C", "uc", c.videoID)
	if !cc.ProducerPaused || cc.Paused {
		t.Fatalf("consumer_created of a paused producer: %+v", cc)
	}

	// Producer resume: a key frame is asked for, B gets media again.
	drain(c.pubRTCP)
	snd.reset()
	before := c.received(c.vc.RtpParameters.Encodings[0].SSRC)
	mustHandle(t, s, "A", "ua", TypeProducerResume, "pr", map[string]string{"room_id": c.room, "producer_id": c.videoID})
	for _, conn := range []string{"B", "C"} {
		fr, ok := snd.last(conn, TypeProducerResumed)
		if want := map[string]any{"producer_id": c.videoID, "user_id": "ua"}; !ok || !reflect.DeepEqual(frameData(t, fr), want) {
			t.Fatalf("%s: producer_resumed %s", conn, fr.Data)
		}
	}
	if len(snd.typesOf("A")) != 1 {
		t.Fatalf("A got %v", snd.typesOf("A"))
	}
	c.waitPLI("producer resume")
	waitFor(t, 10*time.Second, "video at B after resume", func() bool {
		return c.received(c.vc.RtpParameters.Encodings[0].SSRC) > before+10
	})

	// Consumer pause: that consumer stops, the audio one goes on.
	snd.reset()
	mustHandle(t, s, "B", "ub", TypeConsumerPause, "cp", map[string]string{"room_id": c.room, "consumer_id": c.vc.ID})
	if got := snd.of("B"); len(got) != 1 || got[0].Type != "ack" || got[0].ID != "cp" {
		t.Fatalf("B after consumer_pause: %v", snd.typesOf("B"))
	}
	if len(snd.typesOf("A")) != 0 {
		t.Fatalf("the producer's owner was told: %v", snd.typesOf("A"))
	}
	c.stopped(sv, "paused consumer")
	audioBefore = sa.packets.Load()
	c.afterPackets(20)
	if sa.packets.Load() <= audioBefore {
		t.Fatal("the audio consumer stopped with the video consumer")
	}
	drain(c.pubRTCP)
	before = c.received(c.vc.RtpParameters.Encodings[0].SSRC)
	mustHandle(t, s, "B", "ub", TypeConsumerResume, "cr", map[string]string{"room_id": c.room, "consumer_id": c.vc.ID})
	c.waitPLI("consumer resume")
	waitFor(t, 10*time.Second, "video at B after consumer resume", func() bool {
		return c.received(c.vc.RtpParameters.Encodings[0].SSRC) > before+10
	})

	// consume paused, then consumer_resume (the mediasoup-demo pattern).
	mustHandle(t, s, "C", "uc", TypeConsume, "cpa", map[string]any{"room_id": c.room, "producer_id": c.audioID,
		"rtp_capabilities": deviceCaps(), "paused": true})
	fr, _ = snd.last("C", TypeConsumerCreated)
	var pc consumerCreated
	if err := json.Unmarshal(fr.Data, &pc); err != nil || !pc.Paused || pc.ProducerPaused {
		t.Fatalf("paused consume: %s", fr.Data)
	}
	sc := s.serverConsumer(c.room, pc.ID)
	csub := c.connectSub("C", "uc", jc.Recv)
	_ = csub
	c.afterPackets(40)
	if n := sc.packets.Load(); n != 0 {
		t.Fatalf("a consumer created paused forwarded %d packets", n)
	}
	mustHandle(t, s, "C", "uc", TypeConsumerResume, "cra", map[string]string{"room_id": c.room, "consumer_id": pc.ID})
	waitFor(t, 10*time.Second, "audio at C after consumer_resume", func() bool {
		return c.received(pc.RtpParameters.Encodings[0].SSRC) > 10
	})

	st := s.Stats()
	if st.PausedProducers != 0 || st.PausedConsumers != 0 {
		t.Fatalf("paused counts %+v", st)
	}
	mustHandle(t, s, "B", "ub", TypeConsumerPause, "cp3", map[string]string{"room_id": c.room, "consumer_id": c.ac.ID})
	mustHandle(t, s, "A", "ua", TypeProducerPause, "pp3", map[string]string{"room_id": c.room, "producer_id": c.audioID})
	reg := prometheus.NewRegistry()
	reg.MustRegister(s.Collector())
	if p, cn := gatherValue(t, reg, "parley_media_paused_producers", ""), gatherValue(t, reg, "parley_media_paused_consumers", ""); p != 1 || cn != 1 {
		t.Fatalf("paused metrics: producers %v consumers %v", p, cn)
	}
}

// gatherLabel reads one series of a metric by one label (name="" for none).
func gatherLabel(t *testing.T, reg *prometheus.Registry, metric, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != metric {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
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

// ---- ICE restart ----

// restartClient restarts the test client's ICE agent with the server's new
// parameters (what a browser does on transport.restartIce): new local
// credentials and candidates, the server's candidates again. It returns the
// client's new ufrag.
func (tc *testClient) restartICE(t *testing.T, p IceParameters) string {
	t.Helper()
	if err := tc.agent.Restart("", ""); err != nil {
		t.Fatal(err)
	}
	if err := tc.agent.GatherCandidates(); err != nil {
		t.Fatal(err)
	}
	if err := tc.agent.SetRemoteCredentials(p.UsernameFragment, p.Password); err != nil {
		t.Fatal(err)
	}
	tc.info.IceParameters = p
	tc.addRemoteCandidates(t)
	ufrag, _, err := tc.agent.GetLocalUserCredentials()
	if err != nil {
		t.Fatal(err)
	}
	return ufrag
}

func restartICE(t *testing.T, s *SFU, snd *fakeSender, room, conn, user, transportID string) IceParameters {
	t.Helper()
	id := "ri-" + transportID
	mustHandle(t, s, conn, user, TypeRestartICE, id, map[string]string{"room_id": room, "transport_id": transportID})
	fr, ok := snd.last(conn, TypeICERestarted)
	if !ok || fr.ID != id {
		t.Fatalf("no ice_restarted for %s: %v", id, snd.typesOf(conn))
	}
	var m iceRestarted
	if err := json.Unmarshal(fr.Data, &m); err != nil {
		t.Fatal(err)
	}
	if m.TransportID != transportID || !m.IceParameters.IceLite || len(m.IceParameters.UsernameFragment) < 4 || len(m.IceParameters.Password) < 22 {
		t.Fatalf("ice_restarted %s", fr.Data)
	}
	return m.IceParameters
}

// media:restart_ice gives new ICE credentials; the client's checks of the
// new generation (with its new ufrag, from new ports) are accepted and
// media keeps flowing over the same DTLS session, on both directions.
// Twice, and once on a transport that had not connected yet.
func TestICERestart(t *testing.T) {
	c := newCall(t, Config{})
	s, snd := c.s, c.snd
	vssrc := c.vc.RtpParameters.Encodings[0].SSRC
	waitFor(t, 10*time.Second, "media at B", func() bool { return c.received(vssrc) > 20 })
	if err := handle(t, s, "B", "ub", TypeRestartICE, "x", map[string]string{"room_id": c.room, "transport_id": c.ja.Send.ID}); errCode(err) != "not_found" {
		t.Fatalf("restart someone else's transport: %v", err)
	}

	for _, side := range []struct {
		name, conn, user string
		info             TransportInfo
		client           *testClient
		restarts         int
	}{
		{"publisher", "A", "ua", c.ja.Send, c.pub, 1},
		{"subscriber", "B", "ub", c.jb.Recv, c.sub, 1},
		{"publisher again", "A", "ua", c.ja.Send, c.pub, 2},
	} {
		st := s.serverTransport(c.room, side.info.ID)
		old := st.stats(time.Now())
		p := restartICE(t, s, snd, c.room, side.conn, side.user, side.info.ID)
		if p.UsernameFragment == old.IceUsernameFragment {
			t.Fatalf("%s: same ufrag after restart", side.name)
		}
		if got := st.info(s.cert.sha256).IceParameters; got != p {
			t.Fatalf("%s: transport info %+v, restart gave %+v", side.name, got, p)
		}
		ufrag := side.client.restartICE(t, p)
		waitFor(t, 15*time.Second, side.name+": the server accepts the new generation", func() bool {
			ts := st.stats(time.Now())
			return ts.IceRemoteUsernameFrag == ufrag && ts.State == "connected"
		})
		before := c.received(vssrc)
		waitFor(t, 15*time.Second, side.name+": media after the restart", func() bool { return c.received(vssrc) > before+20 })
		ts := st.stats(time.Now())
		if ts.IceRestarts != side.restarts || ts.IceUsernameFragment != p.UsernameFragment || ts.IceSelectedTuple == nil {
			t.Fatalf("%s: stats after restart %+v", side.name, ts)
		}
	}

	// A transport restarted before it ever connected connects with the
	// new parameters.
	jc := joinCall(t, s, snd, c.room, "C", "uc")
	cc := consume(t, s, snd, c.room, "C", "uc", c.videoID)
	p := restartICE(t, s, snd, c.room, "C", "uc", jc.Recv.ID)
	info := jc.Recv
	info.IceParameters = p
	c.connectSub("C", "uc", info)
	waitFor(t, 15*time.Second, "media at C", func() bool { return c.received(cc.RtpParameters.Encodings[0].SSRC) > 20 })
}

// ---- transport timeout ----

// A transport whose client vanished (no packet any more) turns
// disconnected and, after TransportTimeout, is closed: its participant
// leaves the call (peer_left to the others, room_closed to itself).
func TestTransportTimeoutLeavesTheCall(t *testing.T) {
	// The test clients' keepalives come every 2 s (pion's default): a
	// live client is never 3 s silent.
	c := newCall(t, Config{TransportTimeout: 500 * time.Millisecond, iceDisconnectedTimeout: 3 * time.Second})
	s, snd := c.s, c.snd
	waitFor(t, 10*time.Second, "media at B", func() bool { return c.received(c.vc.RtpParameters.Encodings[0].SSRC) > 20 })
	reg := prometheus.NewRegistry()
	reg.MustRegister(s.Collector())
	if n := gatherLabel(t, reg, "parley_media_transports_by_state", "state", "connected"); n != 2 {
		t.Fatalf("connected transports %v", n)
	}
	snd.reset()
	// A's network dies: nothing from A any more.
	c.stopSending()
	c.pub.close()
	waitFor(t, 20*time.Second, "A leaves the call", func() bool {
		_, left := snd.last("B", TypePeerLeft)
		_, closed := snd.last("A", TypeRoomClosed)
		return left && closed
	})
	fr, _ := snd.last("B", TypePeerLeft)
	if want := map[string]any{"room_id": c.room, "user_id": "ua", "connection_id": "A"}; !reflect.DeepEqual(frameData(t, fr), want) {
		t.Fatalf("peer_left %s", fr.Data)
	}
	if fr, ok := snd.last("A", TypeRoomClosed); !ok || !reflect.DeepEqual(frameData(t, fr), map[string]any{"room_id": c.room}) {
		t.Fatalf("A: %v", snd.typesOf("A"))
	}
	if ps, _ := s.Participants(c.room); len(ps) != 1 || ps[0].ConnectionID != "B" {
		t.Fatalf("participants %+v", ps)
	}
	if n := gatherLabel(t, reg, "parley_media_transport_timeouts_total", "", ""); n != 1 {
		t.Fatalf("timeouts %v", n)
	}
	// B's recv transport stays: it still hears from B.
	if st := s.Stats(); st.Transports != 2 || st.TransportsByState[connConnected] != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// ---- stats ----

func getStats(t *testing.T, s *SFU, snd *fakeSender, room, conn, user string, data map[string]string) []map[string]any {
	t.Helper()
	data["room_id"] = room
	id := "gs-" + conn
	mustHandle(t, s, conn, user, TypeGetStats, id, data)
	fr, ok := snd.last(conn, TypeStats)
	if !ok || fr.ID != id {
		t.Fatalf("no media:stats for %s", id)
	}
	var m struct {
		Items []map[string]any `json:"items"`
	}
	if err := json.Unmarshal(fr.Data, &m); err != nil {
		t.Fatal(err)
	}
	return m.Items
}

func num(m map[string]any, k string) float64 {
	f, _ := m[k].(float64)
	return f
}

// media:get_stats answers mediasoup's stats shapes for the caller's own
// transports, producers and consumers: counts, bitrates (sampled every
// second), the producer's loss from its sequence numbers, the consumer's
// loss, jitter and round trip from the receiver's RTCP report.
func TestStats(t *testing.T) {
	c := newCall(t, Config{})
	s, snd := c.s, c.snd
	c.skipEach.Store(10) // A's video loses one packet in 11
	vssrc := c.vc.RtpParameters.Encodings[0].SSRC
	waitFor(t, 10*time.Second, "media and an SR at B", func() bool { return c.received(vssrc) > 50 && c.lastSR.Load() != nil })

	// B reports about its video consumer, answering the last SR.
	waitFor(t, 10*time.Second, "a video SR at B", func() bool {
		sr := c.lastSR.Load()
		return sr != nil && sr.SSRC == vssrc
	})
	sr := c.lastSR.Load()
	if err := c.sub.writeRTCP(&rtcp.ReceiverReport{SSRC: 7, Reports: []rtcp.ReceptionReport{{
		SSRC: vssrc, FractionLost: 64, TotalLost: 5, LastSequenceNumber: 100, Jitter: 90,
		LastSenderReport: uint32(sr.NTPTime >> 16), Delay: 0,
	}}}); err != nil {
		t.Fatal(err)
	}
	// A NACK and a PLI from B, counted.
	if err := c.sub.writeRTCP(&rtcp.TransportLayerNack{SenderSSRC: 7, MediaSSRC: vssrc,
		Nacks: rtcp.NackPairsFromSequenceNumbers([]uint16{1001})}, &rtcp.PictureLossIndication{SenderSSRC: 7, MediaSSRC: vssrc}); err != nil {
		t.Fatal(err)
	}
	var items []map[string]any
	waitFor(t, 10*time.Second, "consumer stats with the receiver report and bitrates", func() bool {
		items = getStats(t, s, snd, c.room, "B", "ub", map[string]string{"consumer_id": c.vc.ID})
		return len(items) == 1 && num(items[0], "packetsLost") == 5 && num(items[0], "bitrate") > 0 && num(items[0], "nackCount") == 1
	})
	v := items[0]
	for k, want := range map[string]any{"type": "outbound-rtp", "consumerId": c.vc.ID, "producerId": c.videoID, "kind": "video",
		"mimeType": "video/VP8", "ssrc": float64(vssrc), "fractionLost": float64(64), "jitter": float64(90), "score": float64(0),
		"pliCount": float64(1), "paused": false, "producerPaused": false} {
		if !reflect.DeepEqual(v[k], want) {
			t.Errorf("consumer stats %s = %v, want %v (%v)", k, v[k], want, v)
		}
	}
	if rtt := num(v, "roundTripTime"); rtt <= 0 || rtt > 5000 || num(v, "packetCount") < 50 || num(v, "byteCount") != 300*num(v, "packetCount") {
		t.Errorf("consumer stats %v", v)
	}

	// A's view: everything of its own, nothing of B's.
	waitFor(t, 10*time.Second, "producer stats with loss and bitrates", func() bool {
		items = getStats(t, s, snd, c.room, "A", "ua", map[string]string{})
		return len(items) == 4 && num(items[2], "packetsLost") > 0 && num(items[2], "bitrate") > 0 && num(items[0], "recvBitrate") > 0
	})
	send, recv, pv, pa := items[0], items[1], items[2], items[3]
	for k, want := range map[string]any{"type": "webrtc-transport", "transportId": c.ja.Send.ID, "direction": "send",
		"state": "connected", "iceState": "connected", "dtlsState": "connected", "iceRole": "controlled"} {
		if send[k] != want {
			t.Errorf("send transport stats %s = %v, want %v (%v)", k, send[k], want, send)
		}
	}
	if tu, _ := send["iceSelectedTuple"].(map[string]any); tu == nil || tu["protocol"] != "udp" || tu["localIp"] != "127.0.0.1" || num(send, "bytesReceived") == 0 {
		t.Errorf("send transport stats %v", send)
	}
	if recv["transportId"] != c.ja.Recv.ID || recv["state"] != "new" || recv["iceSelectedTuple"] != nil {
		t.Errorf("recv transport stats %v", recv)
	}
	if pv["type"] != "inbound-rtp" || pv["producerId"] != c.videoID || pv["kind"] != "video" || num(pv, "ssrc") != tVideoSSRC ||
		num(pv, "rtxSsrc") != tVideoRTX || num(pv, "packetCount") == 0 || num(pv, "pliCount") == 0 || num(pv, "nackCount") == 0 {
		t.Errorf("video producer stats %v", pv)
	}
	// One in 11 lost: about 9 %.
	if lost, n := num(pv, "packetsLost"), num(pv, "packetCount"); lost < n/20 || lost > n/5 {
		t.Errorf("video producer: %v lost of %v", lost, n)
	}
	if pa["producerId"] != c.audioID || num(pa, "packetsLost") != 0 || num(pa, "score") != 10 || pa["mimeType"] != "audio/opus" {
		t.Errorf("audio producer stats %v", pa)
	}
	if it := getStats(t, s, snd, c.room, "A", "ua", map[string]string{"transport_id": c.ja.Send.ID, "producer_id": c.audioID}); len(it) != 2 ||
		it[0]["type"] != "webrtc-transport" || it[1]["producerId"] != c.audioID {
		t.Errorf("stats by id: %v", it)
	}
	for _, q := range []map[string]string{{"consumer_id": c.vc.ID}, {"transport_id": c.jb.Recv.ID}, {"producer_id": "nope"}} {
		q["room_id"] = c.room
		if err := handle(t, s, "A", "ua", TypeGetStats, "x", q); errCode(err) != "not_found" {
			t.Errorf("stats of %v: %v", q, err)
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(s.Collector())
	for _, m := range []struct{ name, dir string }{
		{"parley_media_nacks_total", "received"}, {"parley_media_nacks_total", "sent"},
		{"parley_media_key_frame_requests_total", "received"}, {"parley_media_key_frame_requests_total", "sent"},
	} {
		if v := gatherLabel(t, reg, m.name, "direction", m.dir); v < 1 {
			t.Errorf("%s{direction=%s} = %v", m.name, m.dir, v)
		}
	}
}

// ---- active speaker ----

// speakerFrames returns the producer ids of the media:active_speaker
// frames conn got, in order.
func speakerFrames(t *testing.T, snd *fakeSender, conn string) []string {
	var out []string
	for _, fr := range snd.of(conn) {
		if fr.Type == TypeActiveSpeaker {
			out = append(out, frameData(t, fr)["producer_id"].(string))
		}
	}
	return out
}

// The dominant speaker follows the louder audio (audio level header
// extension), every participant is told of each change once, silence
// changes nothing and a paused producer stops counting.
func TestActiveSpeaker(t *testing.T) {
	c := newCall(t, Config{})
	s, snd := c.s, c.snd
	joinCall(t, s, snd, c.room, "C", "uc") // listens only
	// B publishes audio too.
	var bLevel atomic.Int32
	bLevel.Store(127)
	bpub := connectClient(t, s, c.room, "B", "ub", c.jb.Send)
	t.Cleanup(bpub.close)
	bAudio := produce(t, s, snd, c.room, "B", "ub", c.jb.Send.ID, "audio", opusProduceParams(0x4444))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			a := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: uint16(i), Timestamp: uint32(i * 480), SSRC: 0x4444}, Payload: []byte{0xf8}}
			_ = a.SetExtension(1, []byte{byte(bLevel.Load())})
			_ = bpub.writeRTP(a)
		}
	}()
	t.Cleanup(func() { close(stop); wg.Wait() })

	// Everyone silent: nobody becomes the speaker.
	c.afterPackets(200) // 1 s of A's packets
	if got := speakerFrames(t, snd, "C"); len(got) != 0 {
		t.Fatalf("speaker while everyone is silent: %v", got)
	}
	// A talks (-20 dBov, with the voice bit).
	c.level.Store(0x80 | 20)
	waitFor(t, 10*time.Second, "A as the active speaker", func() bool { return len(speakerFrames(t, snd, "C")) == 1 })
	for _, conn := range []string{"A", "B", "C"} {
		fr, _ := snd.last(conn, TypeActiveSpeaker)
		want := map[string]any{"room_id": c.room, "producer_id": c.audioID, "user_id": "ua", "connection_id": "A"}
		if !reflect.DeepEqual(frameData(t, fr), want) {
			t.Fatalf("%s: active_speaker %s", conn, fr.Data)
		}
	}
	// B talks a little (-55 dBov) while A goes on: A stays.
	bLevel.Store(55)
	c.afterPackets(400) // 2 s
	// Then A falls silent and B talks louder: B takes over.
	c.level.Store(127)
	bLevel.Store(25)
	waitFor(t, 10*time.Second, "B as the active speaker", func() bool { return len(speakerFrames(t, snd, "C")) == 2 })
	if got := speakerFrames(t, snd, "A"); !reflect.DeepEqual(got, []string{c.audioID, bAudio}) {
		t.Fatalf("A's active_speaker frames %v", got)
	}
	// B pauses: A's faint audio is enough to take over (B no longer counts).
	c.level.Store(50)
	mustHandle(t, s, "B", "ub", TypeProducerPause, "bp", map[string]string{"room_id": c.room, "producer_id": bAudio})
	waitFor(t, 10*time.Second, "A back as the active speaker", func() bool { return len(speakerFrames(t, snd, "C")) == 3 })
	if got := speakerFrames(t, snd, "C"); !reflect.DeepEqual(got, []string{c.audioID, bAudio, c.audioID}) {
		t.Fatalf("C's active_speaker frames %v", got)
	}
}

// ---- idle calls ----

type idlerEvents struct {
	fakeEvents
	sfu  atomic.Pointer[SFU]
	idle chan string
}

func (e *idlerEvents) CallIdle(roomID string) {
	e.idle <- roomID
	e.sfu.Load().EndIdleCall(roomID)
}

// A call with no participant for CallIdleTimeout ends on its own (members
// get CallEnded); a participant joining in time keeps it; through the
// CallIdler hook when Events implement it; never with a negative timeout.
func TestIdleCallEnds(t *testing.T) {
	s, snd, ev := newTestSFU(t, Config{CallIdleTimeout: 300 * time.Millisecond})
	s.StartCall("idle", "u")
	s.StartCall("busy", "u")
	joinCall(t, s, snd, "busy", "b", "u")
	// The call leaves the table before its "ended" event fires: wait for both.
	waitFor(t, 10*time.Second, "the idle call ends", func() bool {
		got := ev.all()
		return !s.CallActive("idle") && len(got) > 0 && got[len(got)-1] == "ended idle"
	})
	if !s.CallActive("busy") {
		t.Fatal("a call with a participant ended")
	}
	// The last participant leaves: the clock starts then.
	mustHandle(t, s, "b", "u", TypeLeave, "l", map[string]string{"room_id": "busy"})
	start := time.Now()
	waitFor(t, 10*time.Second, "the emptied call ends", func() bool { return !s.CallActive("busy") })
	if time.Since(start) < 300*time.Millisecond {
		t.Fatal("ended before the idle timeout")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(s.Collector())
	if n := gatherLabel(t, reg, "parley_media_idle_calls_ended_total", "", ""); n != 2 {
		t.Fatalf("idle calls ended %v", n)
	}

	// Through CallIdler.
	ie := &idlerEvents{idle: make(chan string, 4)}
	s2, err := New(Config{ListenIP: "127.0.0.1", IncludeLoopback: true, Workers: 1, CallIdleTimeout: 100 * time.Millisecond},
		newFakeSender(), ie, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s2.Close() })
	ie.sfu.Store(s2)
	s2.StartCall("x", "u")
	select {
	case room := <-ie.idle:
		if room != "x" {
			t.Fatalf("CallIdle(%q)", room)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("CallIdle not called")
	}
	waitFor(t, 10*time.Second, "the call ends", func() bool { return !s2.CallActive("x") })

	// Never.
	s3, _, _ := newTestSFU(t, Config{CallIdleTimeout: -1})
	s3.StartCall("x", "u")
	if s3.EndIdleCall("x") || !s3.CallActive("x") {
		t.Fatal("an idle end without an idle timeout")
	}
}

// ICE restarts leave nothing behind: after cycles of join, connect, two
// restarts (each accepted) and leave, goroutines, UDP sockets and the
// sniffers' awaited ufrags are back to the baseline, on per-transport
// sockets and on the shared UDP port.
func TestICERestartLeaksNothing(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{{"per-transport-sockets", Config{}}, {"udp-mux", Config{UDPMuxPort: freeUDPPort(t)}}} {
		t.Run(tc.name, func(t *testing.T) {
			s, snd, _ := newTestSFU(t, tc.cfg)
			s.StartCall("r", "u")
			cycle := func(i int) {
				conn := fmt.Sprintf("c%d", i)
				j := joinCall(t, s, snd, "r", conn, "u")
				c := connectClient(t, s, "r", conn, "u", j.Send)
				st := s.serverTransport("r", j.Send.ID)
				for range 2 {
					ufrag := c.restartICE(t, restartICE(t, s, snd, "r", conn, "u", j.Send.ID))
					waitFor(t, 15*time.Second, "the new ICE generation", func() bool {
						ts := st.stats(time.Now())
						return ts.IceRemoteUsernameFrag == ufrag && ts.State == "connected"
					})
				}
				mustHandle(t, s, conn, "u", TypeLeave, "", map[string]string{"room_id": "r"})
				c.close()
				snd.reset()
			}
			cycle(0)
			runtime.GC()
			baseG := settleGoroutines(t, 0, 300*time.Millisecond)
			baseS := countUDPSockets()
			for i := 1; i <= 5; i++ {
				cycle(i)
			}
			if g := settleGoroutines(t, baseG+3, 10*time.Second); g > baseG+3 {
				buf := make([]byte, 1<<20)
				n := runtime.Stack(buf, true)
				t.Fatalf("goroutines: %d, baseline %d\n%s", g, baseG, buf[:n])
			}
			if n := countUDPSockets(); n > baseS {
				t.Fatalf("UDP sockets: %d, baseline %d", n, baseS)
			}
			if n := len(s.sharedEPWaiting()); n != 0 {
				t.Fatalf("%d ufrags still awaited", n)
			}
		})
	}
}
