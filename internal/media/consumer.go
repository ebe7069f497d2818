package media

import (
	"crypto/rand"
	"encoding/binary"
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
func (c *consumer) forwardContained(pkt *rtp.Packet) {
	defer c.t.recovered(safe.MediaPacket)
	c.forward(pkt)
}

// forwardHook, when set (tests only), runs for every packet forwarded to a
// consumer; a test makes it panic to check containment.
var forwardHook atomic.Pointer[func(c *consumer)]

func (c *consumer) forward(pkt *rtp.Packet) {
	if h := forwardHook.Load(); h != nil {
		(*h)(c)
	}
	if c.closed.Load() || c.paused.Load() || !c.t.ready.Load() {
		return
	}
	h := c.rewrite(pkt)
	if c.t.writeRTP(&h, pkt.Payload) {
		f := &c.t.sfu.fwd[c.kind]
		f.packets.Add(1)
		f.bytes.Add(uint64(len(pkt.Payload)))
	}
	c.packets.Add(1)
	c.bytes.Add(uint64(len(pkt.Payload)))
}

// rewrite returns the consumer's RTP header (RFC 3550 5.1, one-/two-byte
// extensions RFC 8285) for one of the producer's packets: the consumer's
// SSRC and payload type, the producer's sequence number, timestamp and
// marker, the header extensions the consumer negotiated copied from the
// producer's ids (extURI) to the consumer's, and abs-send-time /
// transport-wide-cc written fresh for the consumer's transport. Other
// extensions are dropped. pkt is not modified.
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
	c.addTransportExtensions(&h)
	return h
}

func (c *consumer) addTransportExtensions(h *rtp.Header) {
	if c.absID != 0 {
		if b, err := rtp.NewAbsSendTimeExtension(time.Now()).Marshal(); err == nil {
			_ = h.SetExtension(c.absID, b)
		}
	}
	if c.twccID != 0 {
		seq := uint16(c.t.twccSeq.Add(1))
		_ = h.SetExtension(c.twccID, []byte{byte(seq >> 8), byte(seq)})
	}
}

// retransmit answers a consumer NACK from the producer's history, as RTX
// when the consumer negotiated it.
func (c *consumer) retransmit(pairs []rtcp.NackPair) {
	p := c.p
	if p.history == nil || c.closed.Load() {
		return
	}
	var seqs []uint16
	for _, pair := range pairs {
		seqs = append(seqs, pair.PacketList()...)
		if len(seqs) > 256 {
			break
		}
	}
	for _, seq := range seqs {
		p.mu.Lock()
		slot, ok := p.history.get(seq)
		p.mu.Unlock()
		if !ok {
			continue
		}
		h := rtp.Header{Version: 2, Marker: slot.marker, Timestamp: slot.ts}
		payload := slot.payload
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
		c.t.writeRTP(&h, payload)
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
