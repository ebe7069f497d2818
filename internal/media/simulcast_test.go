package media

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/interceptor/pkg/twcc"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// recvPkt is one video packet as a subscriber got it.
type recvPkt struct {
	seq     uint16
	ts      uint32
	layer   int // the publisher's layer (last payload byte)
	start   bool
	key     bool
	tid     int8
	pid     uint16
	tl0     uint8
	payload []byte
}

// simSub is a pion subscriber of one video consumer that records what it
// receives and, with feedback, sends transport-cc feedback like a browser.
type simSub struct {
	c         *testClient
	ssrc, rtx uint32
	mu        sync.Mutex
	got       []recvPkt
	rtxGot    []*rtp.Packet
	recMu     sync.Mutex
	rec       *twcc.Recorder
	start     time.Time
	stop      chan struct{}
	wg        sync.WaitGroup
}

func newSimSub(t *testing.T, s *SFU, snd *fakeSender, room, conn string, j joined, producerID string, feedback bool) (*simSub, string) {
	t.Helper()
	cc := consume(t, s, snd, room, conn, conn, producerID)
	sub := &simSub{ssrc: cc.RtpParameters.Encodings[0].SSRC, rtx: cc.RtpParameters.Encodings[0].RTX.SSRC,
		rec: twcc.NewRecorder(7), start: time.Now(), stop: make(chan struct{})}
	if mode := cc.RtpParameters.Encodings[0].ScalabilityMode; mode != "L3T3" {
		t.Fatalf("consumer scalabilityMode %q, want L3T3", mode)
	}
	sub.c = connectClient(t, s, room, conn, conn, j.Recv, func(c *testClient) {
		c.onRTP = sub.onRTP
		c.onRTCP = func([]rtcp.Packet) {}
	})
	if feedback {
		sub.wg.Add(1)
		go func() {
			defer sub.wg.Done()
			tk := time.NewTicker(50 * time.Millisecond)
			defer tk.Stop()
			for {
				select {
				case <-sub.stop:
					return
				case <-tk.C:
				}
				sub.recMu.Lock()
				pkts := sub.rec.BuildFeedbackPacket()
				sub.recMu.Unlock()
				if len(pkts) > 0 {
					_ = sub.c.writeRTCP(pkts...)
				}
			}
		}()
	}
	t.Cleanup(sub.close)
	return sub, cc.ID
}

func (sub *simSub) close() {
	select {
	case <-sub.stop:
		return
	default:
	}
	close(sub.stop)
	sub.wg.Wait()
	sub.c.close()
}

func (sub *simSub) onRTP(p *rtp.Packet) {
	if ext := p.GetExtension(5); len(ext) == 2 { // the router's transport-cc id
		sub.recMu.Lock()
		sub.rec.Record(p.SSRC, uint16(ext[0])<<8|uint16(ext[1]), time.Since(sub.start).Microseconds())
		sub.recMu.Unlock()
	}
	switch p.SSRC {
	case sub.ssrc:
		in := pktInfo{}
		parseVP8(p.Payload, &in)
		r := recvPkt{seq: p.SequenceNumber, ts: p.Timestamp, start: in.frameStart, key: in.keyframe, tid: in.tid,
			pid: in.vp8.pid, tl0: in.vp8.tl0, payload: append([]byte(nil), p.Payload...)}
		if len(p.Payload) > 0 {
			r.layer = int(p.Payload[len(p.Payload)-1])
		}
		sub.mu.Lock()
		sub.got = append(sub.got, r)
		sub.mu.Unlock()
	case sub.rtx:
		sub.mu.Lock()
		sub.rtxGot = append(sub.rtxGot, p.Clone())
		sub.mu.Unlock()
	}
}

func (sub *simSub) packets() []recvPkt {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	return append([]recvPkt(nil), sub.got...)
}

// lastLayer is the layer of the last packet received (-1: none).
func (sub *simSub) lastLayer() (int, int8) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if len(sub.got) == 0 {
		return -1, -1
	}
	g := sub.got[len(sub.got)-1]
	return g.layer, g.tid
}

// checkContinuity: what a receiver sees is one stream: every sequence
// number once and in order, timestamps never going back, each new frame's
// picture id the last + 1, TL0PICIDX + 1 at each base-layer frame.
func checkContinuity(got []recvPkt) error {
	var lastPID uint16
	var lastTL0 uint8
	havePID := false
	for i, g := range got {
		if i > 0 {
			prev := got[i-1]
			if g.seq != prev.seq+1 {
				return fmt.Errorf("packet %d: seq %d after %d", i, g.seq, prev.seq)
			}
			if int32(g.ts-prev.ts) < 0 {
				return fmt.Errorf("packet %d: ts %d after %d", i, g.ts, prev.ts)
			}
		}
		if !g.start {
			continue
		}
		if havePID {
			if g.pid != (lastPID+1)&0x7fff {
				return fmt.Errorf("packet %d (layer %d): picture id %d after %d", i, g.layer, g.pid, lastPID)
			}
			if want := lastTL0 + 1; g.tid == 0 && g.tl0 != want || g.tid != 0 && g.tl0 != lastTL0 {
				return fmt.Errorf("packet %d (layer %d tid %d): tl0 %d after %d", i, g.layer, g.tid, g.tl0, lastTL0)
			}
		}
		lastPID, lastTL0, havePID = g.pid, g.tl0, true
	}
	return nil
}

// layerEvents returns the media:consumer_layers_changed a connection got.
func layerEvents(snd *fakeSender, conn string) []layersChangedMsg {
	var out []layersChangedMsg
	for _, f := range snd.of(conn) {
		if f.Type == TypeConsumerLayersChanged {
			var m layersChangedMsg
			_ = json.Unmarshal(f.Data, &m)
			out = append(out, m)
		}
	}
	return out
}

func lastLayerEvent(snd *fakeSender, conn string) (layersChangedMsg, bool) {
	ev := layerEvents(snd, conn)
	if len(ev) == 0 {
		return layersChangedMsg{}, false
	}
	return ev[len(ev)-1], true
}

// simProducer finds the producer object (white box).
func simProducer(t *testing.T, s *SFU, room, id string) *producer {
	t.Helper()
	r, err := s.routerFor(room)
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.producers[id]
	if p == nil {
		t.Fatalf("no producer %s", id)
	}
	return p
}

// startSimulcast: a call with A publishing 3-layer simulcast (pion, rid-based).
func startSimulcast(t *testing.T, room string) (*SFU, *fakeSender, *simPublisher, string) {
	t.Helper()
	s, snd, _ := newTestSFU(t, Config{})
	if _, _, err := s.StartCall(room, "A"); err != nil {
		t.Fatal(err)
	}
	ja := joinCall(t, s, snd, room, "A", "A")
	pc := connectClient(t, s, room, "A", "A", ja.Send)
	t.Cleanup(pc.close)
	id := produce(t, s, snd, room, "A", "A", ja.Send.ID, "video", simulcastParams(3))
	// ~96 kbit/s, ~310 kbit/s and ~700 kbit/s at 20 fps.
	pub := newSimPublisher(pc, 20, []int{1, 2, 4}, []int{600, 970, 1100})
	t.Cleanup(pub.close)
	// Consumers come once every layer and temporal layer was seen (else the
	// first ones start on what there is, then go up).
	pr := simProducer(t, s, room, id)
	waitFor(t, 10*time.Second, "all layers flowing", func() bool {
		for _, l := range pr.layers {
			if l.maxTID.Load() != 2 {
				return false
			}
		}
		return true
	})
	return s, snd, pub, id
}

// TestSimulcastRIDLearningAndLayerSwitching: a rid-based producer's SSRCs
// are learned from its packets; a consumer receives one layer at a time,
// the highest by default, and follows media:set_preferred_layers (spatial
// and temporal) with media:consumer_layers_changed on every change; across
// every switch the consumer sees one continuous stream.
func TestSimulcastRIDLearningAndLayerSwitching(t *testing.T) {
	const room = "sim"
	s, snd, pub, pid := startSimulcast(t, room)
	jb := joinCall(t, s, snd, room, "B", "B")
	sub, cid := newSimSub(t, s, snd, room, "B", jb, pid, false)

	pr := simProducer(t, s, room, pid)
	waitFor(t, 10*time.Second, "the three layers' SSRCs learned", func() bool {
		for i, l := range pr.layers {
			if l.ssrc.Load() != pub.layers[i].ssrc {
				return false
			}
		}
		return true
	})

	waitLayer := func(what string, layer int, maxTID int8) {
		t.Helper()
		waitFor(t, 10*time.Second, what, func() bool {
			l, _ := sub.lastLayer()
			return l == layer
		})
		// A second of the new layer: only its packets, temporal ceiling kept.
		n := len(sub.packets())
		waitFor(t, 10*time.Second, what+": more packets", func() bool { return len(sub.packets()) > n+20 })
		for _, g := range sub.packets()[n:] {
			if g.layer != layer || g.tid > maxTID {
				t.Fatalf("%s: got layer %d tid %d", what, g.layer, g.tid)
			}
		}
	}
	waitLayer("the highest layer by default", 2, 2)
	if ev, ok := lastLayerEvent(snd, "B"); !ok || ev != (layersChangedMsg{ConsumerID: cid, SpatialLayer: 2, TemporalLayer: 2}) {
		t.Fatalf("layers_changed %+v %v", ev, ok)
	}

	setLayers := func(spatial int, temporal *int) {
		t.Helper()
		data := map[string]any{"room_id": room, "consumer_id": cid, "spatial_layer": spatial}
		if temporal != nil {
			data["temporal_layer"] = *temporal
		}
		reqID := fmt.Sprintf("spl-%d", time.Now().UnixNano())
		mustHandle(t, s, "B", "B", TypeSetPreferredLayers, reqID, data)
		if fr, ok := snd.last("B", "ack"); !ok || fr.ID != reqID {
			t.Fatalf("no ack for set_preferred_layers: %+v", fr)
		}
	}
	plis := pub.plis[0].Load()
	setLayers(0, nil)
	waitLayer("layer 0 after set_preferred_layers 0", 0, 2)
	if pub.plis[0].Load() == plis {
		t.Fatal("no key frame asked of layer 0 for the switch")
	}
	if ev, _ := lastLayerEvent(snd, "B"); ev.SpatialLayer != 0 || ev.TemporalLayer != 2 {
		t.Fatalf("layers_changed %+v, want 0/2", ev)
	}
	zero := 0
	setLayers(1, &zero)
	waitLayer("layer 1, temporal 0", 1, 0)
	if ev, _ := lastLayerEvent(snd, "B"); ev.SpatialLayer != 1 || ev.TemporalLayer != 0 {
		t.Fatalf("layers_changed %+v, want 1/0", ev)
	}
	setLayers(1000, nil) // clamped to the highest (any non-negative integer)
	waitLayer("layer 2 again", 2, 2)
	if ev, _ := lastLayerEvent(snd, "B"); ev.SpatialLayer != 2 || ev.TemporalLayer != 2 {
		t.Fatalf("layers_changed %+v, want 2/2", ev)
	}
	if err := checkContinuity(sub.packets()); err != nil {
		t.Fatal(err)
	}
	// Every change was reported once, in order. A lower temporal ceiling
	// applies at once while a spatial switch waits for the new layer's key
	// frame, so "1/0" may be preceded by "0/0" (the old layer at the new
	// ceiling) when a frame of layer 0 comes before that key frame.
	var got []string
	for _, e := range layerEvents(snd, "B") {
		got = append(got, fmt.Sprintf("%d/%d", e.SpatialLayer, e.TemporalLayer))
	}
	if s := fmt.Sprint(got); s != "[2/2 0/2 1/0 2/2]" && s != "[2/2 0/2 0/0 1/0 2/2]" {
		t.Fatalf("layers_changed sequence %v", got)
	}

	// Bad requests change nothing.
	for _, bad := range []map[string]any{
		{"room_id": room, "consumer_id": cid},
		{"room_id": room, "consumer_id": cid, "spatial_layer": -1},
		{"room_id": room, "consumer_id": cid, "spatial_layer": 1, "temporal_layer": -2},
		{"room_id": room, "consumer_id": cid, "spatial_layer": 1, "extra": true},
	} {
		if err := handle(t, s, "B", "B", TypeSetPreferredLayers, "bad", bad); errCode(err) != "bad_request" {
			t.Fatalf("%v: %v", bad, err)
		}
	}
	if err := handle(t, s, "B", "B", TypeSetPreferredLayers, "nf", map[string]any{"room_id": room, "consumer_id": "nope", "spatial_layer": 0}); errCode(err) != "not_found" {
		t.Fatalf("unknown consumer: %v", err)
	}
	if err := handle(t, s, "A", "A", TypeSetPreferredLayers, "nf", map[string]any{"room_id": room, "consumer_id": cid, "spatial_layer": 0}); errCode(err) != "not_found" {
		t.Fatalf("another connection's consumer: %v", err)
	}
}

// TestSimulcastNACKAndRTXMapping: a loss on a layer is NACKed to the
// publisher on that layer's SSRC, its RTX stream is learned from the RRID
// extension and the repaired packet reaches the consumer in its place;
// a consumer's NACK after a layer switch is answered with RTX carrying
// the consumer's own sequence number and the payload exactly as first sent
// (rewritten VP8 picture id included).
func TestSimulcastNACKAndRTXMapping(t *testing.T) {
	const room = "sim-nack"
	s, snd, pub, pid := startSimulcast(t, room)
	jb := joinCall(t, s, snd, room, "B", "B")
	sub, cid := newSimSub(t, s, snd, room, "B", jb, pid, false)
	waitFor(t, 10*time.Second, "layer 2", func() bool { l, _ := sub.lastLayer(); return l == 2 })
	mustHandle(t, s, "B", "B", TypeSetPreferredLayers, "s1", map[string]any{"room_id": room, "consumer_id": cid, "spatial_layer": 1})
	waitFor(t, 10*time.Second, "layer 1", func() bool { l, _ := sub.lastLayer(); return l == 1 })

	// A loss on layer 1 (frame f's second packet): the SFU NACKs it, the
	// publisher repairs it over RTX (RRID), the consumer gets it.
	pr := simProducer(t, s, room, pid)
	l1 := pub.layers[1]
	f := int(l1.frames.Load()) + 10
	pub.loseOnce(1, f)
	waitFor(t, 10*time.Second, "layer 1's RTX SSRC learned", func() bool { return pr.layers[1].rtxSSRC.Load() == l1.rtx })
	if pr.layers[0].rtxSSRC.Load() != 0 || pr.layers[2].rtxSSRC.Load() != 0 {
		t.Fatal("RTX SSRCs learned for layers without losses")
	}
	waitFor(t, 10*time.Second, "frames past the loss", func() bool { return int(l1.frames.Load()) > f+5 })
	waitFor(t, 5*time.Second, "the repaired packet at the consumer", func() bool {
		got := sub.packets()
		seen := map[uint16]bool{}
		for _, g := range got {
			seen[g.seq] = true
		}
		lo, hi := got[0].seq, got[len(got)-1].seq
		for q := lo; q != hi; q++ {
			if !seen[q] {
				return false
			}
		}
		return true
	})

	// The consumer NACKs a packet of layer 1 it got after the switch.
	var want recvPkt
	for _, g := range sub.packets() {
		if g.layer == 1 && g.start {
			want = g
		}
	}
	if err := sub.c.writeRTCP(&rtcp.TransportLayerNack{SenderSSRC: 9, MediaSSRC: sub.ssrc,
		Nacks: rtcp.NackPairsFromSequenceNumbers([]uint16{want.seq})}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "RTX for the consumer's NACK", func() bool {
		sub.mu.Lock()
		defer sub.mu.Unlock()
		for _, r := range sub.rtxGot {
			if len(r.Payload) > 2 && uint16(r.Payload[0])<<8|uint16(r.Payload[1]) == want.seq {
				if !bytes.Equal(r.Payload[2:], want.payload) || r.Timestamp != want.ts {
					t.Fatalf("RTX payload/ts differ from what was sent: ts %d vs %d", r.Timestamp, want.ts)
				}
				return true
			}
		}
		return false
	})
	// The repaired packet arrived late; in sequence order the stream is
	// continuous.
	got := sub.packets()
	sort.Slice(got, func(i, j int) bool { return int16(got[i].seq-got[j].seq) < 0 })
	if err := checkContinuity(got); err != nil {
		t.Fatal(err)
	}
}

// TestSimulcastLossyReceiverSwitchesDownAlone: two subscribers send
// transport-cc feedback; the SFU drops 40 % of the packets to one of them
// (sendFilter, a lossy link): its estimate falls and it is moved down to
// spatial layer 0 while the other stays on layer 2.
func TestSimulcastLossyReceiverSwitchesDownAlone(t *testing.T) {
	const room = "sim-lossy"
	s, snd, _, pid := startSimulcast(t, room)
	jb := joinCall(t, s, snd, room, "B", "B")
	jc := joinCall(t, s, snd, room, "C", "C")
	subB, _ := newSimSub(t, s, snd, room, "B", jb, pid, true)
	subC, _ := newSimSub(t, s, snd, room, "C", jc, pid, true)
	waitFor(t, 10*time.Second, "both on layer 2", func() bool {
		b, _ := subB.lastLayer()
		c, _ := subC.lastLayer()
		return b == 2 && c == 2
	})
	var n atomic.Uint64
	filter := func(t *transport, _ int) bool {
		if t.owner == nil || t.owner.connID != "C" {
			return true
		}
		return n.Add(1)%5 >= 2 // drop 2 of 5
	}
	sendFilter.Store(&filter)
	t.Cleanup(func() { sendFilter.Store(nil) })
	waitFor(t, 20*time.Second, "C moved down to spatial layer 0", func() bool {
		ev, ok := lastLayerEvent(snd, "C")
		return ok && ev.SpatialLayer == 0
	})
	for _, ev := range layerEvents(snd, "B") {
		if ev.SpatialLayer != 2 {
			t.Fatalf("B was moved too: %+v", layerEvents(snd, "B"))
		}
	}
	if l, _ := subB.lastLayer(); l != 2 {
		t.Fatalf("B receives layer %d", l)
	}
	cs := recvTransport(t, s, room, "C").bwe.estimate()
	bs := recvTransport(t, s, room, "B").bwe.estimate()
	t.Logf("estimates: B %.0f bit/s, C %.0f bit/s; C's layers %+v", bs, cs, layerEvents(snd, "C"))
	if cs >= bs {
		t.Fatalf("C's estimate %.0f not below B's %.0f", cs, bs)
	}
}

func recvTransport(t *testing.T, s *SFU, room, conn string) *transport {
	r, err := s.routerFor(room)
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.participants[conn].recv
}

// TestSimulcastProduceValidation: rid-based and ssrc simulcast produces.
func TestSimulcastProduceValidation(t *testing.T) {
	s, snd, _ := newTestSFU(t, Config{})
	const room = "sim-val"
	if _, _, err := s.StartCall(room, "A"); err != nil {
		t.Fatal(err)
	}
	ja := joinCall(t, s, snd, room, "A", "A")
	try := func(params map[string]any) error {
		return handle(t, s, "A", "A", TypeProduce, "p", map[string]any{
			"room_id": room, "transport_id": ja.Send.ID, "kind": "video", "rtp_parameters": params})
	}
	noRID := simulcastParams(3)
	noRID["headerExtensions"] = []map[string]any{{"uri": extMID, "id": 9, "encrypt": false, "parameters": map[string]any{}}}
	four := simulcastParams(3)
	four["encodings"] = append(four["encodings"].([]map[string]any), map[string]any{"rid": "r3"})
	dupRID := simulcastParams(2)
	dupRID["encodings"].([]map[string]any)[1]["rid"] = "r0"
	mixed := simulcastParams(2)
	mixed["encodings"].([]map[string]any)[1]["ssrc"] = 5
	for name, p := range map[string]map[string]any{"no rid extension": noRID, "4 layers": four, "duplicate rid": dupRID, "mixed": mixed} {
		if err := try(p); errCode(err) != "bad_request" {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := try(simulcastParams(3)); err != nil {
		t.Fatal(err)
	}
	// ssrc simulcast: every encoding's SSRC (and RTX) is routed.
	ssrcSim := vp8ProduceParams(0x100, 0x200)
	ssrcSim["encodings"] = []map[string]any{
		{"ssrc": 0x100, "rtx": map[string]any{"ssrc": 0x200}}, {"ssrc": 0x101, "rtx": map[string]any{"ssrc": 0x201}},
	}
	if err := try(ssrcSim); err != nil {
		t.Fatal(err)
	}
	routes := s.sendRoutes(t, room, "A")
	for ssrc, want := range map[uint32][2]int{0x100: {0, 0}, 0x200: {0, 1}, 0x101: {1, 0}, 0x201: {1, 1}} {
		r, ok := routes[ssrc]
		if !ok || int(r.layer) != want[0] || r.isRTX != (want[1] == 1) {
			t.Errorf("route of %x: %+v %v", ssrc, r, ok)
		}
	}
	if err := try(ssrcSim); errCode(err) != "bad_request" {
		t.Fatalf("reused ssrcs: %v", err)
	}
}

func (s *SFU) sendRoutes(t *testing.T, room, conn string) map[uint32]producerRoute {
	r, err := s.routerFor(room)
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return *r.participants[conn].send.producers.Load()
}
