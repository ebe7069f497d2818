package media

// Fuzz targets for every media decoder reachable from the network (issue 9
// §3): the signalling decoders (Handle and each media:* data struct,
// rtp_parameters, rtp_capabilities, dtls_parameters), STUN sniffing (UDP
// datagrams and the first RFC 4571 frame on TCP), and the RTP/RTCP paths of
// a transport (routing, RTX unwrapping, header rewriting for a consumer,
// RTCP feedback). None needs a socket. CI runs each for 10 s:
//
//	go test -run '^$' -fuzz '^FuzzX$' -fuzztime 10s ./internal/media

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/pion/interceptor/pkg/twcc"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/stun/v4"

	"github.com/parleyhq/parley/internal/protocol"
)

func mustMarshal(tb testing.TB, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

var fuzzDTLS = map[string]any{"role": "client", "fingerprints": []map[string]string{{"algorithm": "sha-256",
	"value": "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89"}}}

// fuzzTypes are the message types FuzzHandle picks from.
var fuzzTypes = []string{TypeJoin, TypeConnectTransport, TypeProduce, TypeConsume, TypeProducerClose, TypeLeave,
	"media:consumer_resume", "media:restart_ice", "media:bogus"}

// FuzzHandle: any data for any media:* type decodes and validates without
// panicking (a contained panic is counted and fails the target), answers a
// *protocol.Error that is never internal, and changes nothing for a
// connection that has not joined.
func FuzzHandle(f *testing.F) {
	seeds := []struct {
		typ  int
		data any
	}{
		{0, map[string]string{"room_id": "r"}},
		{1, map[string]any{"room_id": "r", "transport_id": "t", "dtls_parameters": fuzzDTLS}},
		{2, map[string]any{"room_id": "r", "transport_id": "t", "kind": "video", "rtp_parameters": vp8ProduceParams(1, 2)}},
		{2, map[string]any{"room_id": "r", "transport_id": "t", "kind": "audio", "source": "mic", "rtp_parameters": opusProduceParams(3)}},
		{3, map[string]any{"room_id": "r", "producer_id": "p", "rtp_capabilities": deviceCaps()}},
		{4, map[string]any{"room_id": "r", "producer_id": "p"}},
		{5, map[string]any{"room_id": "r"}},
		{6, map[string]any{"room_id": "r", "consumer_id": "c"}},
		{8, map[string]any{"room_id": "r"}},
	}
	for _, sd := range seeds {
		f.Add(uint8(sd.typ), mustMarshal(f, sd.data))
	}
	pc := newPanicCounter()
	s, err := New(Config{ListenIP: "127.0.0.1", IncludeLoopback: true, Workers: 1, Panics: pc}, newFakeSender(), nil, nil)
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	if _, _, err := s.StartCall("r", "u"); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, ti uint8, data []byte) {
		typ := fuzzTypes[int(ti)%len(fuzzTypes)]
		if typ == TypeJoin {
			// A join that succeeds opens sockets: decode only.
			var m struct {
				RoomID string `json:"room_id"`
			}
			_ = decode(data, &m)
			return
		}
		err := s.Handle(context.Background(), "c1", "u1", typ, "id", data)
		if pc.get("media_transport") != 0 {
			t.Fatalf("%s panicked on %q", typ, data)
		}
		var pe *protocol.Error
		if err == nil || !asProtocolError(err, &pe) || pe.Code == protocol.CodeInternal {
			t.Fatalf("%s: %v", typ, err)
		}
		if st := s.Stats(); st.Participants != 0 || st.Transports != 0 {
			t.Fatalf("state changed: %+v", st)
		}
	})
}

func asProtocolError(err error, pe **protocol.Error) bool {
	p, ok := err.(*protocol.Error)
	*pe = p
	return ok
}

// FuzzDtlsParameters: dtls_parameters decode, validate, and the
// fingerprint check against a real certificate.
func FuzzDtlsParameters(f *testing.F) {
	f.Add(mustMarshal(f, fuzzDTLS))
	f.Add([]byte(`{"role":"auto","fingerprints":[{"algorithm":"sha-512","value":"00"},{"algorithm":"SHA-1","value":"x"}]}`))
	f.Add([]byte(`{"fingerprints":null}`))
	cert, err := newCertificate()
	if err != nil {
		f.Fatal(err)
	}
	der := cert.tls.Certificate[0]
	f.Fuzz(func(t *testing.T, data []byte) {
		var dp DtlsParameters
		if lenient(data, 4096, "dtls_parameters", &dp) != nil || dp.validate() != nil {
			return
		}
		if len(dp.Fingerprints) == 0 || len(dp.Fingerprints) > 8 {
			t.Fatalf("validated %d fingerprints", len(dp.Fingerprints))
		}
		_ = dp.verify([][]byte{der})
		_ = dp.verify(nil)
	})
}

// FuzzRtpParameters: a produce's rtp_parameters (either kind) parse and
// validate; when accepted, a consumer for the router's own capabilities
// can always be built and its parameters encode.
func FuzzRtpParameters(f *testing.F) {
	f.Add(true, mustMarshal(f, vp8ProduceParams(0x1111, 0x2222)))
	f.Add(false, mustMarshal(f, opusProduceParams(0x3333)))
	f.Add(true, mustMarshal(f, withEncodings(vp8ProduceParams(1, 2), []map[string]any{{"rid": "r0"}})))
	f.Add(false, []byte(`{"codecs":[{"mimeType":"audio/PCMU","payloadType":0,"clockRate":8000}],"encodings":[{"ssrc":1}]}`))
	caps := RouterCapabilities()
	f.Fuzz(func(t *testing.T, video bool, data []byte) {
		kind := kindAudio
		if video {
			kind = kindVideo
		}
		pp, err := parseProduce(&produceRequest{Kind: kind, RtpParameters: data})
		if err != nil {
			return
		}
		if len(pp.layers) == 0 || len(pp.layers) > maxLayers {
			t.Fatalf("accepted %d layers", len(pp.layers))
		}
		for _, l := range pp.layers {
			if (l.ssrc == 0) != pp.ridBased || (pp.ridBased && l.rid == "") || (l.rtxSSRC != 0 && l.rtxSSRC == l.ssrc) {
				t.Fatalf("accepted layer %+v (rid-based %v)", l, pp.ridBased)
			}
		}
		pr := newProducer(pp, kind, &participant{connID: "c"}, nil)
		c, err := buildConsumer(pr, &caps)
		if err != nil {
			t.Fatalf("no consumer for the router's own capabilities: %v", err)
		}
		if _, err := json.Marshal(c.params); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzRtpCapabilities: a consume's rtp_capabilities decode and validate;
// when accepted, building a consumer of a VP8 and of an opus producer
// either succeeds with the router's payload type or fails as bad_request.
func FuzzRtpCapabilities(f *testing.F) {
	f.Add(mustMarshal(f, deviceCaps()))
	audioOnly := RouterCapabilities()
	audioOnly.Codecs = audioOnly.Codecs[:1]
	f.Add(mustMarshal(f, audioOnly))
	f.Add([]byte(`{"codecs":[],"headerExtensions":[]}`))
	var prods []*producer
	for _, k := range []struct {
		kind   string
		params map[string]any
	}{{kindVideo, vp8ProduceParams(1, 2)}, {kindAudio, opusProduceParams(3)}} {
		pp, err := parseProduce(&produceRequest{Kind: k.kind, RtpParameters: mustMarshal(f, k.params)})
		if err != nil {
			f.Fatal(err)
		}
		prods = append(prods, newProducer(pp, k.kind, &participant{connID: "c"}, nil))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var caps RtpCapabilities
		if lenient(data, maxRTPCapsSize, "rtp_capabilities", &caps) != nil || validateCapabilities(&caps) != nil {
			return
		}
		for _, pr := range prods {
			c, err := buildConsumer(pr, &caps)
			if err != nil {
				continue
			}
			if c.pt != pr.router.PreferredPayloadType || c.ssrc == 0 {
				t.Fatalf("consumer pt %d ssrc %d", c.pt, c.ssrc)
			}
		}
	})
}

const fuzzPwd = "srvpassword-0123456789"

func fuzzBinding(tb testing.TB, username string) []byte {
	m, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.NewUsername(username),
		stun.NewShortTermIntegrity(fuzzPwd), stun.Fingerprint)
	if err != nil {
		tb.Fatal(err)
	}
	return m.Raw
}

// chunkConn returns data in reads of at most n bytes.
type chunkConn struct {
	net.Conn
	r io.Reader
	n int
}

func (c *chunkConn) Read(b []byte) (int, error) {
	if len(b) > c.n {
		b = b[:c.n]
	}
	return c.r.Read(b)
}

// FuzzSTUNSniff: the ufrag extraction from a datagram (UDP mux) and from
// the first RFC 4571 frame of a TCP connection read in chunks of any size.
// A remote ufrag is only taken from a request signed with the waiting
// transport's password and addressed to it; the TCP wrapper returns the
// stream unchanged.
func FuzzSTUNSniff(f *testing.F) {
	f.Add(fuzzBinding(f, "srvufrag:cliufrag"), uint8(7))
	f.Add(fuzzBinding(f, "srvufrag"), uint8(1))
	f.Add(fuzzBinding(f, "other:cli"), uint8(200))
	f.Add([]byte{0x80, 0x60, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, uint8(3))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		pc := newPanicCounter()
		if _, _, remote, ok := parseBindingRequest(data); ok && (remote == "" || len(remote) > 256) {
			t.Fatalf("remote ufrag %q", remote)
		}
		var got []string
		w := newUfragWaiters(nil)
		w.panics = pc
		w.log = slog.New(slog.DiscardHandler)
		w.expect("srvufrag", fuzzPwd, func(r string) { got = append(got, r) })
		w.inspect(data)
		if len(got) > 0 {
			m := &stun.Message{Raw: append([]byte(nil), data...)}
			if m.Decode() != nil || stun.NewShortTermIntegrity(fuzzPwd).Check(m) != nil {
				t.Fatal("ufrag taken from an unsigned request")
			}
		}
		// The same bytes as the first RFC 4571 frame on TCP.
		framed := binary.BigEndian.AppendUint16(nil, uint16(len(data)))
		framed = append(framed, data...)
		tw := newUfragWaiters(nil)
		tw.panics = pc
		var tgot []string
		tw.expect("srvufrag", fuzzPwd, func(r string) { tgot = append(tgot, r) })
		sc := &sniffingConn{Conn: &chunkConn{r: bytes.NewReader(framed), n: int(chunk)%64 + 1}, waiters: tw}
		out, err := io.ReadAll(sc)
		if err != nil || !bytes.Equal(out, framed) {
			t.Fatalf("stream changed: %v", err)
		}
		if len(data) <= 0xffff && len(data) <= maxSniffedFrame && len(tgot) != len(got) {
			t.Fatalf("TCP sniffing found %v, UDP %v", tgot, got)
		}
		if pc.get("media_packet") != 0 {
			t.Fatalf("inspect panicked on %x", data)
		}
	})
}

// fuzzPath is a send transport with one VP8 producer (RTX) and one opus
// producer, each consumed on a recv transport; no sockets (writes are
// no-ops on transports that are not ready).
type fuzzPath struct {
	panics     *panicCounter // contained panics fail the target
	send, recv *transport
	vp8, opus  *producer
	cv, ca     *consumer
	sim        *producer // rid-based simulcast: SSRCs learned from packets
	cs         *consumer
	svc        *producer // VP9 SVC (L3T3_KEY): spatial layers in one SSRC
	csvc       *consumer
}

func stubTransport(s *SFU, dir direction) *transport {
	t := &transport{id: newID(), dir: dir, sfu: s, log: s.log, twccRec: twcc.NewRecorder(1), start: time.Now()}
	if dir == dirRecv {
		t.bwe.log = &sentLog{}
	}
	empty := map[uint32]producerRoute{}
	t.producers.Store(&empty)
	emptyC := map[uint32]*consumer{}
	t.consumers.Store(&emptyC)
	return t
}

func newFuzzPath(tb testing.TB) *fuzzPath {
	pc := newPanicCounter()
	s := &SFU{log: slog.New(slog.DiscardHandler), cfg: Config{Panics: pc}}
	fp := &fuzzPath{panics: pc, send: stubTransport(s, dirSend), recv: stubTransport(s, dirRecv)}
	owner := &participant{connID: "pub"}
	caps := RouterCapabilities()
	for _, k := range []struct {
		kind   string
		params map[string]any
		p      **producer
		c      **consumer
	}{{kindVideo, vp8ProduceParams(0x1111, 0x2222), &fp.vp8, &fp.cv}, {kindAudio, opusProduceParams(0x3333), &fp.opus, &fp.ca},
		{kindVideo, simulcastParams(3), &fp.sim, &fp.cs},
		{kindVideo, vp9SVCProduceParams(0x5555, 0x5556, "L3T3_KEY"), &fp.svc, &fp.csvc}} {
		pp, err := parseProduce(&produceRequest{Kind: k.kind, RtpParameters: mustMarshal(tb, k.params)})
		if err != nil {
			tb.Fatal(err)
		}
		pr := newProducer(pp, k.kind, owner, fp.send)
		c, err := buildConsumer(pr, &caps)
		if err != nil {
			tb.Fatal(err)
		}
		c.t = fp.recv
		pr.setConsumers(func(l []*consumer) []*consumer { return append(l, c) })
		fp.send.setProducerRoutes(func(m map[uint32]producerRoute) {
			for ssrc, r := range pr.routes() {
				m[ssrc] = r
			}
		})
		fp.recv.setConsumerRoutes(func(m map[uint32]*consumer) {
			m[c.ssrc] = c
			if c.rtxSSRC != 0 {
				m[c.rtxSSRC] = c
			}
		})
		if pp.twccID != 0 {
			fp.send.twccExtID.Store(int32(pp.twccID))
		}
		if pr.ridBased {
			fp.send.setRIDProducers(func(l []*producer) []*producer { return append(l, pr) })
		}
		*k.p, *k.c = pr, c
	}
	return fp
}

func marshalRTP(tb testing.TB, p *rtp.Packet) []byte {
	b, err := p.Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// FuzzRTPPath: one decrypted RTP packet through a send transport (routing
// by SSRC, learning the SSRCs of a rid-based simulcast producer from
// MID/RID/RRID, transport-cc recording, RTX unwrapping, NACK generation,
// the retransmission history, the VP8/H264 parsing and each consumer's
// forwarder) and the header rewrite for the consumer of its producer: the rewritten packet always carries the consumer's SSRC and
// payload type, only extension ids the consumer negotiated, and marshals
// and parses back with the same payload.
func FuzzRTPPath(f *testing.F) {
	fp := newFuzzPath(f)
	v := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: 1000, Timestamp: 3000, SSRC: 0x1111, Marker: true}, Payload: vp8Payload(300)}
	_ = v.SetExtension(13, []byte{0x01})
	_ = v.SetExtension(9, []byte("1"))
	_ = v.SetExtension(3, []byte{0, 7})
	f.Add(marshalRTP(f, v))
	a := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: 5, Timestamp: 960, SSRC: 0x3333}, Payload: []byte{0xf8, 0xff, 0xfe}}
	_ = a.SetExtension(1, []byte{0x85})
	f.Add(marshalRTP(f, a))
	rtx := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 97, SequenceNumber: 1, Timestamp: 3000, SSRC: 0x2222}, Payload: append([]byte{0x03, 0xe8}, vp8Payload(40)...)}
	f.Add(marshalRTP(f, rtx))
	gap := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: 1010, Timestamp: 6000, SSRC: 0x1111}, Payload: vp8Payload(20)}
	f.Add(marshalRTP(f, gap))
	f.Add([]byte{0x80, 0x60, 0, 1})
	// Packets of the rid-based producer: its layers' SSRCs are learned.
	for i, rid := range []string{"r0", "r1", "r2"} {
		sp := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: uint16(10 * i), Timestamp: 9000, SSRC: 0x7000 + uint32(i)},
			Payload: vp8Frame(uint16(300+i), uint8(i), uint8(i), i == 0, true, 40)}
		_ = sp.SetExtension(simMidExt, []byte("1"))
		_ = sp.SetExtension(simRIDExt, []byte(rid))
		f.Add(marshalRTP(f, sp))
	}
	srtx := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 97, SequenceNumber: 3, Timestamp: 9000, SSRC: 0x7100},
		Payload: append([]byte{0, 10}, vp8Frame(301, 1, 1, false, true, 40)...)}
	_ = srtx.SetExtension(simMidExt, []byte("1"))
	_ = srtx.SetExtension(simRRIDExt, []byte("r1"))
	f.Add(marshalRTP(f, srtx))
	// A VP9 SVC key picture, layers 0 to 2.
	for sid := range 3 {
		vp := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 98, SequenceNumber: uint16(20 + sid), Timestamp: 9000, SSRC: 0x5555, Marker: sid == 2},
			Payload: vp9Pkt(400, uint8(sid), 0, false, true, true)}
		f.Add(marshalRTP(f, vp))
	}
	allowed := map[*consumer]map[uint8]bool{}
	for _, c := range []*consumer{fp.cv, fp.ca, fp.cs, fp.csvc} {
		ids := map[uint8]bool{c.absID: true, c.twccID: true}
		for _, id := range c.passExt {
			ids[id] = true
		}
		allowed[c] = ids
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fp.send.onRTP(append([]byte(nil), data...))
		if fp.panics.get("media_packet") != 0 {
			t.Fatalf("forwarding panicked on %x", data)
		}
		var pkt rtp.Packet
		if pkt.Unmarshal(append([]byte(nil), data...)) != nil {
			return
		}
		for _, c := range []*consumer{fp.cv, fp.ca, fp.cs, fp.csvc} {
			h := c.rewrite(&pkt)
			c.addTransportExtensions(&h)
			out := &rtp.Packet{Header: h, Payload: pkt.Payload}
			raw, err := out.Marshal()
			if err != nil {
				t.Fatalf("rewritten packet does not marshal: %v", err)
			}
			var back rtp.Packet
			if err := back.Unmarshal(raw); err != nil {
				t.Fatalf("rewritten packet does not parse: %v", err)
			}
			if back.SSRC != c.ssrc || back.PayloadType != c.pt || !bytes.Equal(back.Payload, pkt.Payload) {
				t.Fatalf("rewrite: ssrc %x pt %d", back.SSRC, back.PayloadType)
			}
			for _, id := range back.GetExtensionIDs() {
				if !allowed[c][id] {
					t.Fatalf("extension id %d not negotiated by the consumer", id)
				}
			}
		}
	})
}

// FuzzRTCPPath: one decrypted compound RTCP packet on the recv transport
// (consumer PLI/FIR/NACK/REMB/TWCC) and on the send transport (producer SR).
func FuzzRTCPPath(f *testing.F) {
	fp := newFuzzPath(f)
	for _, pkts := range [][]rtcp.Packet{
		{&rtcp.PictureLossIndication{SenderSSRC: 9, MediaSSRC: fp.cv.ssrc}},
		{&rtcp.FullIntraRequest{SenderSSRC: 9, MediaSSRC: fp.cv.ssrc, FIR: []rtcp.FIREntry{{SSRC: fp.cv.ssrc, SequenceNumber: 1}}}},
		{&rtcp.TransportLayerNack{SenderSSRC: 9, MediaSSRC: fp.cv.ssrc, Nacks: rtcp.NackPairsFromSequenceNumbers([]uint16{1000, 1001, 1005})}},
		{&rtcp.ReceiverReport{SSRC: 9}, &rtcp.ReceiverEstimatedMaximumBitrate{SenderSSRC: 9, Bitrate: 1e6, SSRCs: []uint32{fp.cv.ssrc}}},
		{&rtcp.SenderReport{SSRC: 0x1111, NTPTime: 1 << 40, RTPTime: 3000, PacketCount: 10, OctetCount: 3000}},
		{&rtcp.TransportLayerCC{SenderSSRC: 9, MediaSSRC: fp.cv.ssrc, BaseSequenceNumber: 1, PacketStatusCount: 3, ReferenceTime: 1,
			PacketChunks: []rtcp.PacketStatusChunk{&rtcp.RunLengthChunk{PacketStatusSymbol: rtcp.TypeTCCPacketReceivedSmallDelta, RunLength: 2},
				&rtcp.StatusVectorChunk{SymbolSize: rtcp.TypeTCCSymbolSizeOneBit, SymbolList: []uint16{0, 1}}},
			RecvDeltas: []*rtcp.RecvDelta{{Type: rtcp.TypeTCCPacketReceivedSmallDelta, Delta: 250}, {Type: rtcp.TypeTCCPacketReceivedSmallDelta, Delta: 250}}}},
	} {
		b, err := rtcp.Marshal(pkts)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	// Fill the history so that NACKs find packets.
	for i := 0; i < 8; i++ {
		fp.vp8.receive(&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: uint16(1000 + i), SSRC: 0x1111}, Payload: vp8Payload(50)}, 0, false)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fp.recv.onRTCP(append([]byte(nil), data...))
		fp.send.onRTCP(append([]byte(nil), data...))
	})
}
