package media

// What the forwarding path reads from a video payload: whether a packet
// starts a frame or a key frame, the VP8/VP9 temporal layer, the VP9
// spatial layer and frame boundaries, and the byte offsets of the VP8
// picture id and TL0PICIDX, which each consumer rewrites (see forwarder).
// Parsed once per incoming packet.

// pktInfo describes one incoming packet for the consumers' forwarders.
type pktInfo struct {
	stream     int8 // the producer's encoding index (its SSRC: history, sender reports)
	layer      int8 // spatial layer: the encoding index (simulcast) or the VP9 SVC layer id
	keyframe   bool // the packet starts a key frame
	frameStart bool // the packet starts a frame (VP8; VP9: a picture's first layer frame; H264: false)
	tid        int8 // VP8/VP9 temporal layer id; -1 when the stream carries none
	maxTID     int8 // highest temporal layer id seen on this layer so far (-1: none)
	vp8        vp8Desc

	// VP9 (RFC 9628 4.2): the packet ends a layer frame (E), and that
	// frame is predicted from an earlier picture (P): K-SVC leaves such
	// frames of the layers below the one received out.
	layerEnd bool
	inter    bool
}

// vp8Desc locates the fields of a VP8 payload descriptor (RFC 7741 4.2)
// that a consumer rewrites so that its picture ids and TL0PICIDX stay
// continuous across layer switches and dropped temporal layers.
type vp8Desc struct {
	pidLen uint8 // 0 (none), 1 (7-bit picture id) or 2 (15-bit)
	pidOff uint8
	tl0Off uint8 // 0: no TL0PICIDX (it is never at offset 0)
	pid    uint16
	tl0    uint8
}

// parseVP8 fills in from a VP8 RTP payload (RFC 7741): descriptor, then
// for the first packet of a frame the payload header's P bit (0: key
// frame). Malformed or short payloads leave in as "no information".
func parseVP8(b []byte, in *pktInfo) {
	in.tid = -1
	if len(b) < 1 {
		return
	}
	x, s, partID := b[0]&0x80 != 0, b[0]&0x10 != 0, b[0]&0x07
	i := 1
	var d vp8Desc
	tid := int8(-1)
	if x {
		if len(b) < 2 {
			return
		}
		xb := b[1]
		i = 2
		if xb&0x80 != 0 { // I: picture id
			if len(b) <= i {
				return
			}
			if b[i]&0x80 != 0 { // M: 15 bits
				if len(b) <= i+1 {
					return
				}
				d.pidLen, d.pidOff, d.pid = 2, uint8(i), uint16(b[i]&0x7f)<<8|uint16(b[i+1])
				i += 2
			} else {
				d.pidLen, d.pidOff, d.pid = 1, uint8(i), uint16(b[i]&0x7f)
				i++
			}
		}
		if xb&0x40 != 0 { // L: TL0PICIDX
			if len(b) <= i {
				return
			}
			d.tl0Off, d.tl0 = uint8(i), b[i]
			i++
		}
		if xb&0x30 != 0 { // T or K: TID|Y|KEYIDX
			if len(b) <= i {
				return
			}
			if xb&0x20 != 0 {
				tid = int8(b[i] >> 6)
			}
			i++
		}
	}
	if len(b) <= i {
		return
	}
	in.vp8, in.tid = d, tid
	in.frameStart = s && partID == 0
	in.keyframe = in.frameStart && b[i]&0x01 == 0
}

// patchVP8 writes a consumer's picture id and TL0PICIDX into its copy of
// a VP8 payload, at the offsets parseVP8 found (same widths).
func patchVP8(b []byte, d *vp8Desc, pid uint16, tl0 uint8) {
	switch d.pidLen {
	case 1:
		if int(d.pidOff) < len(b) {
			b[d.pidOff] = byte(pid & 0x7f)
		}
	case 2:
		if int(d.pidOff)+1 < len(b) {
			b[d.pidOff] = 0x80 | byte(pid>>8&0x7f)
			b[d.pidOff+1] = byte(pid)
		}
	}
	if d.tl0Off != 0 && int(d.tl0Off) < len(b) {
		b[d.tl0Off] = tl0
	}
}

// parseH264 marks packets that start a key frame (RFC 6184): a single
// SPS or IDR NAL unit, a STAP-A carrying one, or the first fragment of an
// IDR (FU-A). H264 carries no temporal layer here.
func parseH264(b []byte, in *pktInfo) {
	in.tid = -1
	if len(b) < 1 {
		return
	}
	switch nal := b[0] & 0x1f; nal {
	case 5, 7:
		in.keyframe = true
	case 24: // STAP-A: [size(2) NAL]...
		for i := 1; i+2 < len(b); {
			n := int(b[i])<<8 | int(b[i+1])
			if t := b[i+2] & 0x1f; t == 5 || t == 7 {
				in.keyframe = true
				return
			}
			i += 2 + n
		}
	case 28: // FU-A
		if len(b) >= 2 && b[1]&0x80 != 0 && b[1]&0x1f == 5 {
			in.keyframe = true
		}
	}
}

// parseVP9 fills in from a VP9 RTP payload descriptor (RFC 9628 4.2,
// "I|P|L|F|B|E|V|Z", then the picture id when I, then the layer indices
// "TID|U|SID|D" when L, then TL0PICIDX when L and not F): the spatial
// layer id (in.layer, when svc), the temporal layer id, frame boundaries
// and key frames (B set, P clear, spatial layer 0: a picture that
// references no earlier one, as mediasoup's VP9::Parse decides). The
// rest of the descriptor (scalability structure, flexible-mode
// references) is not needed to forward. Malformed or short payloads leave
// in as "no information". pion/rtp's codecs.VP9Packet parses the same
// fields but allocates per packet (its P_DIFF slice), on the hot path.
func parseVP9(b []byte, in *pktInfo, svc bool) {
	in.tid = -1
	if len(b) < 1 {
		return
	}
	h := b[0]
	i := 1
	if h&0x80 != 0 { // I: picture id, 7 or 15 bits
		if len(b) <= i {
			return
		}
		if b[i]&0x80 != 0 {
			i++
		}
		i++
	}
	sid, tid := int8(0), int8(-1)
	if h&0x20 != 0 { // L: layer indices
		if len(b) <= i {
			return
		}
		tid, sid = int8(b[i]>>5), int8(b[i]>>1&0x07)
		i++
	}
	if len(b) <= i {
		return
	}
	inter, start, end := h&0x40 != 0, h&0x08 != 0, h&0x04 != 0
	if tid >= maxTemporal {
		tid = maxTemporal - 1
	}
	in.tid, in.inter, in.layerEnd = tid, inter, end
	if svc {
		in.layer = sid
	}
	in.frameStart = start && sid == 0
	in.keyframe = in.frameStart && !inter
}
