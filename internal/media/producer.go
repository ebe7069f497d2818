package media

import (
	"encoding/binary"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// producer is one incoming track on a send transport: one layer per
// encoding (simulcast: up to 3, lowest first, as mediasoup numbers them).
type producer struct {
	id     string
	kind   string
	source string
	owner  *participant
	t      *transport
	params RtpParameters // as the client sent them
	codec  RtpCodecParameters
	router RtpCodecCapability // matched router codec
	layers []*layer
	pt     uint8
	rtxPT  uint8
	cname  string
	extURI map[uint8]string // client's ids
	seqNo  uint64
	vp8    bool
	vp9    bool
	h264   bool

	// VP9 SVC (one encoding carrying several spatial layers, its
	// scalabilityMode "L<n>T<m>[_KEY]" with n > 1): svc is n, ksvc whether
	// the layers only depend on each other at key frames (_KEY, or "S"
	// modes). svcMeters measure each spatial layer as layer.meter does an
	// encoding's. svc is 0 for simulcast and single-layer producers.
	svc       int
	ksvc      bool
	svcMeters []*meter

	// rid-based encodings: where to read mid/rid/rrid on packets of unknown
	// SSRCs (the client's ids; 0: not negotiated).
	mid                     string
	midExt, ridExt, rridExt uint8
	ridBased                bool
	temporalLayers          int // declared (encodings' scalabilityMode LxTy), for consumers' parameters

	consumers atomic.Pointer[[]*consumer]
	st        streamLifecycle // paused: nothing is read or forwarded
	packets   atomic.Uint64
	bytes     atomic.Uint64

	ctl producerCtl // statistics and audio level (stats.go)
}

// state is the producer's lifecycle: active ⇄ paused (media:producer_pause
// / _resume) → closed (media:producer_close, its owner leaving, a second
// join, the call ending). The packet path reads it once per packet.
func (p *producer) state() streamState { return p.st.load() }

// setPaused pauses or resumes an open producer (media:producer_pause /
// _resume) and reports whether its state changed. A paused producer's
// packets are dropped on arrival (producer.receive): nothing is stored,
// forwarded or read for its audio level, so the black frames and silence
// a paused mediasoup-client track keeps sending go nowhere. The caller
// restarts its consumers on resume (restartConsumers).
func (p *producer) setPaused(pause bool) bool { return p.st.setPaused(pause) }

// restartConsumers makes each consumer's forwarder continue its sequence
// numbers and timestamps after the last ones sent; video waits for a key
// frame, which consumer.restart requests (after a resume).
func (p *producer) restartConsumers() {
	for _, c := range p.consumerList() {
		c.restart()
	}
}

// consumerList is the producer's consumers now (copy-on-write: do not
// modify).
func (p *producer) consumerList() []*consumer { return *p.consumers.Load() }

// close closes the producer (router lock held): every consumer of it
// closes, its SSRCs are no longer routed on its transport, and its owner
// forgets it. It reports false when it was already closed.
func (p *producer) close() bool {
	if !p.st.close() {
		return false
	}
	for _, c := range p.consumerList() {
		c.close()
	}
	p.t.removeProducer(p)
	delete(p.owner.producers, p.id)
	return true
}

// layer is one encoding (spatial layer) of a producer.
type layer struct {
	rid     string
	ssrc    atomic.Uint32 // learned from the RID extension when rid-based
	rtxSSRC atomic.Uint32 // learned from the RRID extension when rid-based

	history *packetHistory // video only

	mu         sync.Mutex // history, NACK generation, PLI throttle, sender report
	started    bool
	highestSeq uint16
	lastPLI    time.Time
	srNTP      uint64
	srRTP      uint32
	haveSR     bool

	meter
}

// meter measures one spatial layer (an encoding, or a VP9 SVC layer):
// written by the packet path, read by the allocator.
type meter struct {
	lastAt   atomic.Int64 // mono ns of the last media packet (0: none)
	maxTID   atomic.Int32 // highest temporal layer id seen; -1: none
	tidBytes [maxTemporal]atomic.Uint64
	// rate[t]: bit/s of temporal layers 0..t, measured by the worker
	// (measureRates); 0 until measured.
	rate [maxTemporal]atomic.Uint64

	mBytes [maxTemporal]uint64 // worker only: counters at the last measurement
	mAt    int64
}

func newMeter() *meter {
	m := &meter{}
	m.maxTID.Store(-1)
	return m
}

// spatialLayers is the number of spatial layers consumers choose from.
func (p *producer) spatialLayers() int {
	if p.svc > 1 {
		return p.svc
	}
	return len(p.layers)
}

// meterOf returns spatial layer s's meter.
func (p *producer) meterOf(s int) *meter {
	if p.svc > 1 {
		return p.svcMeters[s]
	}
	return &p.layers[s].meter
}

// streamOf is the encoding (SSRC) that carries spatial layer s.
func (p *producer) streamOf(s int) int {
	if p.svc > 1 {
		return 0
	}
	return s
}

// ProducerInfo describes a producer in Participants.
type ProducerInfo struct {
	ID     string `json:"id"`
	Kind   string `json:"kind"`
	Source string `json:"source"`
}

var monoEpoch = time.Now()

// monoNow is a monotonic clock in ns for the packet path.
func monoNow() int64 { return int64(time.Since(monoEpoch)) }

// receive handles one decrypted packet from the producer's client, of
// layer li (media, or RTX to unwrap).
func (p *producer) receive(pkt *rtp.Packet, li int, isRTX bool) {
	if p.state() != streamActive {
		return
	}
	lay := p.layers[li]
	if isRTX {
		if len(pkt.Payload) < 2 {
			return // padding probe
		}
		osn := binary.BigEndian.Uint16(pkt.Payload)
		pkt.Payload = pkt.Payload[2:]
		pkt.SequenceNumber = osn
		pkt.SSRC = lay.ssrc.Load()
		pkt.PayloadType = p.pt
	} else if pkt.PayloadType != p.pt {
		return
	}
	if len(pkt.Payload) == 0 {
		return // padding only
	}
	p.observe(pkt, li, isRTX)
	p.packets.Add(1)
	p.bytes.Add(uint64(len(pkt.Payload)))
	in := pktInfo{stream: int8(li), layer: int8(li), tid: -1}
	switch {
	case p.vp8:
		parseVP8(pkt.Payload, &in)
	case p.vp9:
		parseVP9(pkt.Payload, &in, p.svc > 1)
		if int(in.layer) >= p.spatialLayers() {
			return // a spatial layer the producer did not declare
		}
	case p.h264:
		parseH264(pkt.Payload, &in)
	}
	now := monoNow()
	m := p.meterOf(int(in.layer))
	if !isRTX {
		m.lastAt.Store(now)
		t := max(in.tid, 0)
		m.tidBytes[t].Add(uint64(len(pkt.Payload)))
		if int32(in.tid) > m.maxTID.Load() {
			m.maxTID.Store(int32(in.tid))
		}
	}
	in.maxTID = int8(m.maxTID.Load())
	if lay.history != nil {
		p.track(lay, pkt, isRTX)
	}
	for _, c := range *p.consumers.Load() {
		c.forwardContained(pkt, &in)
	}
}

// track stores a video packet in its layer's history and NACKs gaps in
// the layer's sequence to the producer's client.
func (p *producer) track(lay *layer, pkt *rtp.Packet, isRTX bool) {
	var missing []uint16
	lay.mu.Lock()
	lay.history.store(pkt)
	if !lay.started {
		lay.started, lay.highestSeq = true, pkt.SequenceNumber
	} else if d := int16(pkt.SequenceNumber - lay.highestSeq); d > 0 {
		if d > 1 && d <= 128 && !isRTX {
			for s := lay.highestSeq + 1; s != pkt.SequenceNumber; s++ {
				missing = append(missing, s)
			}
		}
		lay.highestSeq = pkt.SequenceNumber
	}
	lay.mu.Unlock()
	if len(missing) > 0 {
		p.countNACK()
		p.t.writeRTCP([]rtcp.Packet{&rtcp.TransportLayerNack{
			SenderSSRC: 1, MediaSSRC: lay.ssrc.Load(), Nacks: rtcp.NackPairsFromSequenceNumbers(missing),
		}})
	}
}

// requestKeyFrame asks the producer's client for a key frame of spatial
// layer s (PLI on the SSRC carrying it: RFC 4585 6.3.1), at most every
// 300 ms per SSRC unless forced.
func (p *producer) requestKeyFrame(s int, force bool) {
	if p.kind != kindVideo || p.state() == streamClosed || s < 0 || s >= p.spatialLayers() {
		return
	}
	lay := p.layers[p.streamOf(s)]
	ssrc := lay.ssrc.Load()
	if ssrc == 0 {
		return // rid-based layer not seen yet
	}
	lay.mu.Lock()
	now := time.Now()
	if !force && now.Sub(lay.lastPLI) < 300*time.Millisecond {
		lay.mu.Unlock()
		return
	}
	lay.lastPLI = now
	lay.mu.Unlock()
	p.countKeyFrameRequest()
	p.t.writeRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{SenderSSRC: 1, MediaSSRC: ssrc}})
}

// onSenderReport records a layer's SR (NTP ↔ RTP, for timestamp
// continuity on switches) and forwards it, rewritten, to each consumer
// forwarding that layer (same NTP time, the consumer's RTP timeline).
func (p *producer) onSenderReport(sr *rtcp.SenderReport, li int) {
	lay := p.layers[li]
	lay.mu.Lock()
	lay.srNTP, lay.srRTP, lay.haveSR = sr.NTPTime, sr.RTPTime, true
	lay.mu.Unlock()
	for _, c := range *p.consumers.Load() {
		if !c.t.ready.Load() || c.state() == streamClosed {
			continue
		}
		c.fmu.Lock()
		ok := c.fwd.started && c.fwd.cur >= 0 && p.streamOf(c.fwd.cur) == li
		rtpTime := sr.RTPTime - c.fwd.tsOffset
		c.fmu.Unlock()
		if !ok {
			continue
		}
		c.noteSR(sr.NTPTime)
		c.t.writeRTCP([]rtcp.Packet{&rtcp.SenderReport{
			SSRC: c.ssrc, NTPTime: sr.NTPTime, RTPTime: rtpTime,
			PacketCount: uint32(c.packets.Load()), OctetCount: uint32(c.bytes.Load()),
		}})
	}
}

// layerOffset implements srMapper from the layers' last sender reports.
func (p *producer) layerOffset(from, to int, clock uint32) (uint32, bool) {
	if p.svc > 1 {
		return 0, true // one stream, one RTP clock
	}
	if from < 0 || to < 0 || from >= len(p.layers) || to >= len(p.layers) {
		return 0, false
	}
	a, b := p.layers[from], p.layers[to]
	a.mu.Lock()
	aNTP, aRTP, aOK := a.srNTP, a.srRTP, a.haveSR
	a.mu.Unlock()
	b.mu.Lock()
	bNTP, bRTP, bOK := b.srNTP, b.srRTP, b.haveSR
	b.mu.Unlock()
	if !aOK || !bOK {
		return 0, false
	}
	// NTP is 32.32 fixed point seconds: (bNTP − aNTP) in clock units.
	dNTP := int64(bNTP - aNTP)
	dClock := (dNTP >> 16) * int64(clock) >> 16
	return aRTP - bRTP + uint32(dClock), true
}

// active reports whether spatial layer s had media within the last 1.5 s.
func (p *producer) active(s int, now int64) bool {
	at := p.meterOf(s).lastAt.Load()
	return at != 0 && now-at < 1500e6
}

// optionRate is what forwarding spatial layer s with temporal layers
// 0..t costs, in bit/s: the layer's own rate, plus in full SVC the layers
// below it, which each of its pictures references (K-SVC: only at key
// frames, which are not counted).
func (p *producer) optionRate(s, t int) float64 {
	r := float64(p.meterOf(s).rate[t].Load())
	if p.svc > 1 && !p.ksvc {
		for below := range s {
			r += float64(p.svcMeters[below].rate[t].Load())
		}
	}
	return r
}

// measureRates updates each spatial layer's bit rates from its byte
// counters (worker, every allocation period): an average of the last
// measurement and the new one.
func (p *producer) measureRates(now int64) {
	for s := range p.spatialLayers() {
		lay := p.meterOf(s)
		if lay.mAt == 0 {
			for t := range lay.mBytes {
				lay.mBytes[t] = lay.tidBytes[t].Load()
			}
			lay.mAt = now
			continue
		}
		dt := float64(now-lay.mAt) / 1e9
		if dt < 0.2 {
			continue
		}
		var cum float64
		for t := range lay.mBytes {
			b := lay.tidBytes[t].Load()
			cum += float64(b-lay.mBytes[t]) * 8 / dt
			lay.mBytes[t] = b
			old := float64(lay.rate[t].Load())
			v := cum
			if old > 0 {
				v = (old + cum) / 2
			}
			lay.rate[t].Store(uint64(v))
		}
		lay.mAt = now
	}
}

func (p *producer) setConsumers(fn func([]*consumer) []*consumer) {
	old := *p.consumers.Load()
	next := fn(append([]*consumer(nil), old...))
	p.consumers.Store(&next)
}

func (p *producer) info() ProducerInfo {
	return ProducerInfo{ID: p.id, Kind: p.kind, Source: p.source}
}

// packetHistory keeps the last packets of one video layer for
// retransmission on a consumer's NACK.
//
// It is kept rather than pion/interceptor's NACK responder: the responder
// buffers each outgoing stream, i.e. one copy of every packet per
// consumer, with the consumer's own header; here one copy per producer
// layer serves every consumer, and each consumer's forwarder maps its
// sequence numbers back to this history (forwarder.lookup) and rewrites
// the retransmission as it rewrote the original.
type packetHistory struct {
	slots [historySize]historySlot
}

const historySize = 1024

type historySlot struct {
	valid   bool
	seq     uint16
	ts      uint32
	marker  bool
	payload []byte
}

func (h *packetHistory) store(pkt *rtp.Packet) {
	s := &h.slots[pkt.SequenceNumber%historySize]
	s.valid, s.seq, s.ts, s.marker = true, pkt.SequenceNumber, pkt.Timestamp, pkt.Marker
	s.payload = append(s.payload[:0], pkt.Payload...)
}

func (h *packetHistory) get(seq uint16) (historySlot, bool) {
	s := h.slots[seq%historySize]
	if !s.valid || s.seq != seq {
		return historySlot{}, false
	}
	s.payload = append([]byte(nil), s.payload...)
	return s, true
}

var producerSeq, consumerSeq atomicCounter

// newProducer builds a producer of kind from a validated produce request,
// owned by p on send transport t (not yet routed).
func newProducer(pp *parsedProduce, kind string, p *participant, t *transport) *producer {
	pr := &producer{
		id: newID(), kind: kind, source: pp.source, owner: p, t: t,
		params: pp.params, codec: pp.codec, router: pp.router,
		pt: pp.codec.PayloadType, rtxPT: pp.rtxPT,
		cname: pp.params.Rtcp.CNAME, extURI: pp.extURI, seqNo: producerSeq.next(),
		mid: pp.params.MID, midExt: pp.midExt, ridExt: pp.ridExt, rridExt: pp.rridExt,
		ridBased: pp.ridBased, temporalLayers: pp.temporal,
		vp8:  kind == kindVideo && strings.EqualFold(pp.codec.MimeType, "video/VP8"),
		vp9:  kind == kindVideo && strings.EqualFold(pp.codec.MimeType, "video/VP9"),
		h264: kind == kindVideo && strings.EqualFold(pp.codec.MimeType, "video/H264"),
		svc:  pp.svc, ksvc: pp.ksvc,
	}
	for range pp.svc {
		pr.svcMeters = append(pr.svcMeters, newMeter())
	}
	for _, pl := range pp.layers {
		l := &layer{rid: pl.rid}
		l.ssrc.Store(pl.ssrc)
		l.rtxSSRC.Store(pl.rtxSSRC)
		l.maxTID.Store(-1)
		if kind == kindVideo {
			l.history = &packetHistory{}
		}
		pr.layers = append(pr.layers, l)
	}
	pr.ctl.levelID, pr.ctl.clock = audioLevelID(pp.extURI), pp.codec.ClockRate
	empty := []*consumer{}
	pr.consumers.Store(&empty)
	return pr
}

// ssrcs lists the producer's known SSRCs with their routes.
func (p *producer) routes() map[uint32]producerRoute {
	m := map[uint32]producerRoute{}
	for i, l := range p.layers {
		if s := l.ssrc.Load(); s != 0 {
			m[s] = producerRoute{p: p, layer: uint8(i)}
		}
		if s := l.rtxSSRC.Load(); s != 0 {
			m[s] = producerRoute{p: p, layer: uint8(i), isRTX: true}
		}
	}
	return m
}
