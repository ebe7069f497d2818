package media

import (
	"crypto/rand"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"

	"github.com/parleyhq/parley/internal/protocol"
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

	closed atomic.Bool
	paused atomic.Bool // media:consumer_pause (or consume with paused: true)

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
	if c.closed.Load() || !c.t.ready.Load() || c.paused.Load() || c.want.Load()&(1<<in.layer) == 0 {
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
	s := c.t.sfu
	if s == nil || s.sender == nil || c.owner == nil {
		return
	}
	s.sender.SendToConnection(c.owner.connID, protocol.Encode(TypeConsumerLayersChanged, "", layersChangedMsg{
		ConsumerID: c.id, SpatialLayer: ls.spatial, TemporalLayer: ls.temporal,
	}))
}

// layersChangedMsg is media:consumer_layers_changed (consumer ids are
// unique across rooms: no room_id, as PROTOCOL.md names it).
type layersChangedMsg struct {
	ConsumerID    string `json:"consumer_id"`
	SpatialLayer  int    `json:"spatial_layer"`
	TemporalLayer int    `json:"temporal_layer"`
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
	if p.kind != kindVideo || c.closed.Load() {
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
