package media

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"

	"github.com/parleyhq/parley/internal/safe"
)

// consumer forwards one producer to one recv transport, rewriting SSRC,
// payload type and header-extension ids to the consumer's (router's).
type consumer struct {
	id      string
	seq     uint64 // creation order (allocation order)
	p       *producer
	t       *transport
	owner   *participant
	params  RtpParameters
	ssrc    uint32
	rtxSSRC uint32
	pt      uint8
	rtxPT   uint8
	kind    int // kindIndex of the producer's kind

	// header extension ids (0: not negotiated)
	passExt map[string]uint8 // uri → consumer id, values copied from the producer
	absID   uint8
	twccID  uint8

	st streamLifecycle // paused: media:consumer_pause (or consume with paused: true)

	// fwd picks the layer forwarded and rewrites sequence numbers,
	// timestamps and VP8 ids (forwarder.go); fmu guards it.
	fmu  sync.Mutex
	fwd  *forwarder
	want atomic.Uint32 // fwd.wantMask(), updated under fmu

	// Layer selection (bwe.go), guarded by the transport's bwe.mu:
	// preferred layers (media:set_preferred_layers; -1: the highest) and
	// the allocator's state.
	prefSpatial, prefTemporal int
	alloc                     allocState

	rtxMu  sync.Mutex
	rtxSeq uint16

	packets atomic.Uint64
	bytes   atomic.Uint64

	ctl consumerCtl // statistics from the receiver's RTCP (stats.go)
}

// state is the consumer's lifecycle: active ⇄ paused
// (media:consumer_pause / _resume, or media:consume with paused: true) →
// closed (its producer closing, its owner leaving, a second join, the call
// ending). The packet path reads it once per packet (forward): only an
// active consumer is sent anything.
func (c *consumer) state() streamState { return c.st.load() }

// setPaused pauses or resumes an open consumer and reports whether its
// state changed; the caller restarts a resumed one (restart: a video
// consumer starts again with a key frame, requested from its producer).
func (c *consumer) setPaused(pause bool) bool { return c.st.setPaused(pause) }

// start attaches a new consumer to its producer once media:consumer_created
// is out (router lock held): its recv transport's layer allocation runs
// for it, the producer forwards to it from the next packet, and an
// unpaused one asks for a key frame.
func (c *consumer) start() {
	c.t.allocate(monoNow(), false)
	c.p.setConsumers(func(list []*consumer) []*consumer { return append(list, c) })
	if c.state() != streamPaused {
		c.requestKeyFrame(true)
	}
}

// preferLayers sets the highest spatial and temporal layers (0-based;
// temporal -1: the highest) this consumer wants
// (media:set_preferred_layers, mediasoup's consumer.setPreferredLayers),
// clamped to what the producer has; the allocator re-targets at once. An
// audio consumer ignores it.
func (c *consumer) preferLayers(spatial, temporal int) {
	if c.p.kind != kindVideo {
		return
	}
	if temporal >= 0 {
		temporal = min(temporal, maxTemporal-1)
	}
	c.setPreferredLayers(min(spatial, c.p.spatialLayers()-1), temporal)
}

// close closes the consumer (router lock held): its producer stops
// forwarding to it, its transport stops routing its RTCP, its owner
// forgets it. It reports false when it was already closed.
func (c *consumer) close() bool {
	if !c.st.close() {
		return false
	}
	c.p.setConsumers(func(list []*consumer) []*consumer {
		out := list[:0]
		for _, x := range list {
			if x != c {
				out = append(out, x)
			}
		}
		return out
	})
	c.t.removeConsumer(c)
	delete(c.owner.consumers, c.id)
	return true
}

// forwardContained forwards on the producer's read goroutine; a panic
// while forwarding to this consumer fails the consumer's transport (its
// participant leaves the call), not the producer's, and the producer's
// other consumers still get the packet.
func (c *consumer) forwardContained(pkt *rtp.Packet, in *pktInfo) {
	defer c.t.recovered(safe.MediaPacket)
	c.forward(pkt, in)
}

// forwardHook, when set (tests only), runs for every packet forwarded to a
// consumer; a test makes it panic to check containment.
var forwardHook atomic.Pointer[func(c *consumer)]

func (c *consumer) forward(pkt *rtp.Packet, in *pktInfo) {
	if h := forwardHook.Load(); h != nil {
		(*h)(c)
	}
	if c.state() != streamActive || !c.t.ready.Load() || c.want.Load()&(1<<in.layer) == 0 {
		return
	}
	now := monoNow()
	c.fmu.Lock()
	o := c.fwd.translate(pkt.SequenceNumber, pkt.Timestamp, in, now, c.p)
	if o.anchored {
		c.want.Store(c.fwd.wantMask())
	}
	c.fmu.Unlock()
	if o.askKey >= 0 {
		c.p.requestKeyFrame(o.askKey, false)
	}
	if o.changed {
		c.layersChanged(o.layers)
	}
	if !o.send {
		return
	}
	h := c.rewrite(pkt)
	h.SequenceNumber, h.Timestamp = o.seq, o.ts
	h.Marker = h.Marker || o.marker
	c.addTransportExtensions(&h)
	var rw *vp8Rewrite
	if o.patch {
		rw = &vp8Rewrite{d: &in.vp8, pid: o.pid, tl0: o.tl0}
	}
	if c.t.writeRTPRewrite(&h, pkt.Payload, rw, c.twccID) {
		f := &c.t.sfu.fwd[c.kind]
		f.packets.Add(1)
		f.bytes.Add(uint64(len(pkt.Payload)))
	}
	c.packets.Add(1)
	c.bytes.Add(uint64(len(pkt.Payload)))
}

// layersChanged tells the consumer's connection which layers it now
// receives (media:consumer_layers_changed).
func (c *consumer) layersChanged(ls layerState) {
	if s := c.t.sfu; s != nil {
		s.notify.consumerLayersChanged(c, ls)
	}
}

// keyFrameLayer is the layer a key-frame request of this consumer is for:
// the one it receives, or the one it waits for.
func (c *consumer) keyFrameLayer() int {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	if c.fwd.cur >= 0 {
		return c.fwd.cur
	}
	return c.fwd.target
}

// requestKeyFrame asks the producer for a key frame of the layer this
// consumer receives or waits for.
func (c *consumer) requestKeyFrame(force bool) {
	c.p.requestKeyFrame(c.keyFrameLayer(), force)
}

// restart makes the consumer's stream go on seamlessly after a gap in
// forwarding (resume): the next key frame (video) or packet (audio)
// re-anchors sequence numbers and timestamps after the last ones sent; a
// key frame is requested.
func (c *consumer) restart() {
	c.fmu.Lock()
	c.fwd.restart(monoNow())
	c.want.Store(c.fwd.wantMask())
	c.fmu.Unlock()
	c.requestKeyFrame(true)
}

// rewrite returns the consumer's RTP header (RFC 3550 5.1, one-/two-byte
// extensions RFC 8285) for one of the producer's packets: the consumer's
// SSRC and payload type, the producer's sequence number, timestamp and
// marker (forward replaces sequence number and timestamp with the
// forwarder's), the header extensions the consumer negotiated copied from
// the producer's ids (extURI) to the consumer's. Other extensions are
// dropped; abs-send-time and transport-wide-cc are added by
// addTransportExtensions. pkt is not modified.
func (c *consumer) rewrite(pkt *rtp.Packet) rtp.Header {
	h := rtp.Header{
		Version: 2, Marker: pkt.Marker, PayloadType: c.pt,
		SequenceNumber: pkt.SequenceNumber, Timestamp: pkt.Timestamp, SSRC: c.ssrc,
	}
	if pkt.Extension && len(c.passExt) > 0 {
		for _, id := range pkt.GetExtensionIDs() {
			if cid := c.passExt[c.p.extURI[id]]; cid != 0 {
				_ = h.SetExtension(cid, pkt.GetExtension(id))
			}
		}
	}
	return h
}

// addTransportExtensions writes abs-send-time, and a transport-wide-cc
// extension that writeRTPRewrite numbers (in wire order, for the
// bandwidth estimate).
func (c *consumer) addTransportExtensions(h *rtp.Header) {
	if c.absID != 0 {
		if b, err := rtp.NewAbsSendTimeExtension(time.Now()).Marshal(); err == nil {
			_ = h.SetExtension(c.absID, b)
		}
	}
	if c.twccID != 0 {
		_ = h.SetExtension(c.twccID, []byte{0, 0})
	}
}

// retransmit answers a consumer NACK: each sequence number is mapped back
// through the forwarder to (layer, source seq), read from that layer's
// history, and sent as it was first sent (same sequence number, timestamp
// and VP8 ids), as RTX when the consumer negotiated it; within the limits
// of forwarder.nacked (3 times, 100 ms apart, up to 1.5 s old).
func (c *consumer) retransmit(pairs []rtcp.NackPair) {
	p := c.p
	if p.kind != kindVideo || c.state() == streamClosed {
		return
	}
	var seqs []uint16
	for _, pair := range pairs {
		seqs = append(seqs, pair.PacketList()...)
		if len(seqs) > 256 {
			break
		}
	}
	now := monoNow()
	for _, seq := range seqs {
		c.fmu.Lock()
		e, ok := c.fwd.nacked(seq, now)
		c.fmu.Unlock()
		if !ok || int(e.layer) >= len(p.layers) {
			continue
		}
		lay := p.layers[e.layer]
		lay.mu.Lock()
		slot, ok := lay.history.get(e.src)
		lay.mu.Unlock()
		if !ok {
			continue
		}
		payload := slot.payload
		if e.patch {
			var in pktInfo
			parseVP8(payload, &in)
			patchVP8(payload, &in.vp8, e.pid, e.tl0)
		}
		h := rtp.Header{Version: 2, Marker: slot.marker || e.marker, Timestamp: e.ts}
		if c.rtxSSRC != 0 {
			c.rtxMu.Lock()
			c.rtxSeq++
			h.SequenceNumber = c.rtxSeq
			c.rtxMu.Unlock()
			h.SSRC, h.PayloadType = c.rtxSSRC, c.rtxPT
			payload = append([]byte{byte(seq >> 8), byte(seq)}, payload...)
		} else {
			h.SSRC, h.PayloadType, h.SequenceNumber = c.ssrc, c.pt, seq
		}
		c.addTransportExtensions(&h)
		c.t.writeRTPRewrite(&h, payload, nil, c.twccID)
	}
}

func randSSRC() uint32 {
	var b [4]byte
	for {
		_, _ = rand.Read(b[:])
		if v := binary.BigEndian.Uint32(b[:]); v > 1 {
			return v
		}
	}
}

// buildConsumer makes a consumer of pr for a device with caps: its RTP
// parameters (mediasoup's ortc.getConsumerRtpParameters, reduced to one
// encoding: the router's codec the device has, its RTCP feedback in
// common, RTX for video when the device has it, the router's header
// extensions the device has), new random SSRCs and a forwarder. Not yet
// owned, routed or attached (router.consume, consumer.start). Error: no
// codec of the device matches the producer's router codec.
func buildConsumer(pr *producer, caps *RtpCapabilities) (*consumer, error) {
	rc := pr.router
	var capCodec *RtpCodecCapability
	for i := range caps.Codecs {
		cc := &caps.Codecs[i]
		if isRTXMime(cc.MimeType) {
			continue
		}
		if codecMatches(rc, cc.MimeType, cc.ClockRate, cc.Channels, cc.Parameters) {
			capCodec = cc
			break
		}
	}
	if capCodec == nil {
		return nil, fmt.Errorf("no compatible codec for producer %s (%s)", pr.id, rc.MimeType)
	}
	fb := []RtcpFeedback{}
	for _, f := range rc.RtcpFeedback {
		if hasFeedback(capCodec.RtcpFeedback, f) {
			fb = append(fb, f)
		}
	}
	params := map[string]any{}
	for k, v := range pr.codec.Parameters {
		params[k] = v
	}
	if strings.EqualFold(rc.MimeType, "video/H264") {
		for k, v := range rc.Parameters {
			params[k] = v
		}
	}
	c := &consumer{
		p: pr, kind: kindIndex(pr.kind), ssrc: randSSRC(), pt: rc.PreferredPayloadType, passExt: map[string]uint8{},
		seq: consumerSeq.next(), prefSpatial: -1, prefTemporal: -1,
		fwd:   forwarderFor(pr, rc.ClockRate),
		alloc: allocState{spatial: -1, temporal: -1, upDelay: baseUpDelay},
	}
	codecs := []RtpCodecParameters{{
		MimeType: rc.MimeType, PayloadType: rc.PreferredPayloadType, ClockRate: rc.ClockRate,
		Channels: rc.Channels, Parameters: params, RtcpFeedback: fb,
	}}
	if rtx, ok := routerRTXFor(rc.PreferredPayloadType); ok && pr.kind == kindVideo {
		for _, cc := range caps.Codecs {
			if apt, ok := paramInt(cc.Parameters, "apt"); ok && isRTXMime(cc.MimeType) && apt == int(rc.PreferredPayloadType) {
				codecs = append(codecs, RtpCodecParameters{
					MimeType: rtx.MimeType, PayloadType: rtx.PreferredPayloadType, ClockRate: rtx.ClockRate,
					Parameters: map[string]any{"apt": int(rc.PreferredPayloadType)}, RtcpFeedback: []RtcpFeedback{},
				})
				c.rtxSSRC, c.rtxPT = randSSRC(), rtx.PreferredPayloadType
				break
			}
		}
	}
	exts := []RtpHeaderExtensionParameters{}
	for _, e := range routerHeaderExtensions() {
		if e.Kind != pr.kind || (e.Direction != "sendrecv" && e.Direction != "sendonly") {
			continue
		}
		found := false
		for _, ce := range caps.HeaderExtensions {
			if ce.URI == e.URI && (ce.Kind == "" || ce.Kind == pr.kind) {
				found = true
				break
			}
		}
		if !found {
			continue
		}
		exts = append(exts, RtpHeaderExtensionParameters{URI: e.URI, ID: e.PreferredID, Parameters: map[string]any{}})
		switch e.URI {
		case extAbsSendTime:
			c.absID = uint8(e.PreferredID)
		case extTransportCC:
			c.twccID = uint8(e.PreferredID)
		default:
			c.passExt[e.URI] = uint8(e.PreferredID)
		}
	}
	c.want.Store(c.fwd.wantMask())
	enc := RtpEncodingParameters{SSRC: c.ssrc, ScalabilityMode: consumerScalabilityMode(pr)}
	if c.rtxSSRC != 0 {
		enc.RTX = &RtxSSRC{SSRC: c.rtxSSRC}
	}
	cname := pr.cname
	if cname == "" {
		cname = "parley-" + pr.owner.connID
	}
	mux := true
	c.params = RtpParameters{
		Codecs: codecs, HeaderExtensions: exts, Encodings: []RtpEncodingParameters{enc},
		Rtcp: RtcpParameters{CNAME: cname, ReducedSize: true, Mux: &mux},
	}
	return c, nil
}
