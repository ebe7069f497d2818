package media

import (
	"bytes"
	"context"
	"encoding/json"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"unicode/utf8"

	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/safe"
)

// Message types of PROTOCOL.md section 6.
const (
	TypeJoin               = "media:join"
	TypeConnectTransport   = "media:connect_transport"
	TypeProduce            = "media:produce"
	TypeConsume            = "media:consume"
	TypeProducerClose      = "media:producer_close"
	TypeLeave              = "media:leave"
	TypeRouterCapabilities = "media:router_capabilities"
	TypeTransportCreated   = "media:transport_created"
	TypeTransportConnected = "media:transport_connected"
	TypeProduceResult      = "media:produce_result"
	TypeNewProducer        = "media:new_producer"
	TypeConsumerCreated    = "media:consumer_created"
	TypeProducerClosed     = "media:producer_closed"
	TypePeerLeft           = "media:peer_left"
	TypeRoomClosed         = "media:room_closed"

	// v1.1 (PROTOCOL.md section 6, "More requests").
	TypeProducerPause   = "media:producer_pause"
	TypeProducerResume  = "media:producer_resume"
	TypeConsumerPause   = "media:consumer_pause"
	TypeConsumerResume  = "media:consumer_resume"
	TypeRestartICE      = "media:restart_ice"
	TypeGetStats        = "media:get_stats"
	TypeProducerPaused  = "media:producer_paused"
	TypeProducerResumed = "media:producer_resumed"
	TypeICERestarted    = "media:ice_restarted"
	TypeStats           = "media:stats"
	TypeActiveSpeaker   = "media:active_speaker"

	// v1.1 simulcast layers (PROTOCOL.md section 6).
	TypeSetPreferredLayers    = "media:set_preferred_layers"
	TypeConsumerLayersChanged = "media:consumer_layers_changed"
)

// unsupportedTypes are the requests PROTOCOL.md v1.1 section 6 names that
// this SFU does not implement yet. They are answered with an error of code
// protocol.CodeUnsupported, which the gateway never counts as a protocol
// violation; a media:* type missing from both this set and Handle's switch
// stays bad_request.
var unsupportedTypes = map[string]bool{ // none left: every section 6 request is implemented
}

// UnsupportedTypes lists, sorted, the requests PROTOCOL.md v1.1 section 6
// names that this SFU answers with protocol.CodeUnsupported (tests).
func UnsupportedTypes() []string {
	out := make([]string, 0, len(unsupportedTypes))
	for typ := range unsupportedTypes {
		out = append(out, typ)
	}
	sort.Strings(out)
	return out
}

// knownType reports whether msgType is a client request of PROTOCOL.md
// section 6 (implemented or not).
func knownType(msgType string) bool {
	switch msgType {
	case TypeJoin, TypeConnectTransport, TypeProduce, TypeConsume, TypeProducerClose, TypeLeave,
		TypeProduceData, TypeConsumeData, TypeSetPreferredLayers:
		return true
	case TypeProducerPause, TypeProducerResume, TypeConsumerPause, TypeConsumerResume, TypeRestartICE, TypeGetStats:
		return true
	}
	return unsupportedTypes[msgType]
}

const maxSourceLen = 32

// Handle processes one media:* message from connection connID of userID.
// Replies and broadcasts go out through the Sender; a returned error is a
// *protocol.Error for the caller to send with reqID. A refused message
// changes nothing.
//
// Errors: bad_request / too_large for malformed data or an unknown media:*
// type; unsupported for a request PROTOCOL.md v1.1 section 6 names that
// this SFU does not implement (see unsupportedTypes), and for every known
// request when calls are disabled (see Disabled); not_found, forbidden as
// documented per message. A panic while handling is contained: it is
// logged and counted (safe.MediaTransport) and the request gets internal;
// every lock is released by defers.
func (s *SFU) Handle(ctx context.Context, connID, userID, msgType, reqID string, data json.RawMessage) (err error) {
	_ = ctx
	defer func() {
		if v := recover(); v != nil {
			safe.Report(s.log, s.cfg.Panics, safe.MediaTransport, v, debug.Stack())
			err = protocol.Errorf(protocol.CodeInternal, "internal error handling %s", msgType)
		}
	}()
	if connID == "" {
		return protocol.Errorf(protocol.CodeBadRequest, "missing connection id")
	}
	if s.disabled != "" && knownType(msgType) {
		return s.disabledError()
	}
	if unsupportedTypes[msgType] {
		return protocol.Errorf(protocol.CodeUnsupported, "%s is not supported by this server", msgType)
	}
	switch msgType {
	case TypeJoin:
		var m struct {
			RoomID string `json:"room_id"`
		}
		if err := decode(data, &m); err != nil {
			return err
		}
		return s.join(m.RoomID, connID, userID, reqID)
	case TypeConnectTransport:
		var m struct {
			RoomID         string          `json:"room_id"`
			TransportID    string          `json:"transport_id"`
			DtlsParameters json.RawMessage `json:"dtls_parameters"`
		}
		if err := decode(data, &m); err != nil {
			return err
		}
		return s.connectTransport(m.RoomID, connID, m.TransportID, m.DtlsParameters, reqID)
	case TypeProduce:
		var m produceRequest
		if err := decode(data, &m); err != nil {
			return err
		}
		return s.produce(connID, &m, reqID)
	case TypeConsume:
		var m struct {
			RoomID          string          `json:"room_id"`
			ProducerID      string          `json:"producer_id"`
			RtpCapabilities json.RawMessage `json:"rtp_capabilities"`
			Paused          bool            `json:"paused"`
		}
		if err := decode(data, &m); err != nil {
			return err
		}
		return s.consume(m.RoomID, connID, m.ProducerID, m.RtpCapabilities, m.Paused, reqID)
	case TypeProducerClose:
		var m struct {
			RoomID     string `json:"room_id"`
			ProducerID string `json:"producer_id"`
		}
		if err := decode(data, &m); err != nil {
			return err
		}
		return s.producerClose(m.RoomID, connID, m.ProducerID, reqID)
	case TypeSetPreferredLayers:
		var m struct {
			RoomID        string `json:"room_id"`
			ConsumerID    string `json:"consumer_id"`
			SpatialLayer  *int   `json:"spatial_layer"`
			TemporalLayer *int   `json:"temporal_layer"`
		}
		if err := decode(data, &m); err != nil {
			return err
		}
		return s.setPreferredLayers(m.RoomID, connID, m.ConsumerID, m.SpatialLayer, m.TemporalLayer, reqID)
	case TypeLeave:
		var m struct {
			RoomID string `json:"room_id"`
		}
		if err := decode(data, &m); err != nil {
			return err
		}
		if !protocol.ValidRoomID(m.RoomID) {
			return protocol.Errorf(protocol.CodeBadRequest, "invalid room_id")
		}
		return s.leave(m.RoomID, connID, reqID)
	case TypeProducerPause, TypeProducerResume:
		var m struct {
			RoomID     string `json:"room_id"`
			ProducerID string `json:"producer_id"`
		}
		if err := decode(data, &m); err != nil {
			return err
		}
		return s.pauseProducer(m.RoomID, connID, m.ProducerID, msgType == TypeProducerPause, reqID)
	case TypeConsumerPause, TypeConsumerResume:
		var m struct {
			RoomID     string `json:"room_id"`
			ConsumerID string `json:"consumer_id"`
		}
		if err := decode(data, &m); err != nil {
			return err
		}
		return s.pauseConsumer(m.RoomID, connID, m.ConsumerID, msgType == TypeConsumerPause, reqID)
	case TypeRestartICE:
		var m struct {
			RoomID      string `json:"room_id"`
			TransportID string `json:"transport_id"`
		}
		if err := decode(data, &m); err != nil {
			return err
		}
		return s.restartICE(m.RoomID, connID, m.TransportID, reqID)
	case TypeGetStats:
		var m statsRequest
		if err := decode(data, &m); err != nil {
			return err
		}
		return s.getStats(connID, &m, reqID)
	case TypeProduceData, TypeConsumeData:
		return s.handleData(connID, msgType, reqID, data)
	}
	return protocol.Errorf(protocol.CodeBadRequest, "unknown message type %q", truncate(msgType, 64))
}

// joinHook, when set (tests only), runs in media:join under the router's
// lock; a test makes it panic to check that the lock is released.
var joinHook atomic.Pointer[func()]

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func decode(data json.RawMessage, v any) error {
	if perr := protocol.DecodeData(data, v); perr != nil {
		return perr
	}
	return nil
}

func badRequest(format string, args ...any) error {
	return protocol.Errorf(protocol.CodeBadRequest, format, args...)
}

// lenient decodes a mediasoup object (unknown fields allowed).
func lenient(raw json.RawMessage, max int, name string, v any) error {
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return badRequest("missing %s", name)
	}
	if len(raw) > max {
		return protocol.Errorf(protocol.CodeTooLarge, "%s larger than %d bytes", name, max)
	}
	if raw[0] != '{' {
		return badRequest("%s must be an object", name)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return badRequest("invalid %s: %s", name, shortErr(err))
	}
	return nil
}

func shortErr(err error) string {
	s := err.Error()
	if len(s) > 160 {
		s = s[:160]
	}
	return s
}

// participantFor finds the router and the connection's participant; the
// router is returned locked on success.
func (s *SFU) participantFor(roomID, connID string) (*router, *participant, error) {
	r, err := s.routerFor(roomID)
	if err != nil {
		return nil, nil, err
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, nil, notFoundCall(roomID)
	}
	p := r.participants[connID]
	if p == nil || p.send == nil {
		r.mu.Unlock()
		return nil, nil, protocol.Errorf(protocol.CodeNotFound, "connection has not joined the call of room %s (send media:join)", roomID)
	}
	return r, p, nil
}

type transportCreated struct {
	SendTransport TransportInfo `json:"send_transport"`
	RecvTransport TransportInfo `json:"recv_transport"`
	IceServers    []IceServer   `json:"ice_servers"`
	ForceRelay    bool          `json:"force_relay"`
}

type newProducerMsg struct {
	ProducerID   string `json:"producer_id"`
	UserID       string `json:"user_id"`
	ConnectionID string `json:"connection_id"`
	Kind         string `json:"kind"`
	Source       string `json:"source"`
}

func newProducerFrame(p *producer) []byte {
	return protocol.Encode(TypeNewProducer, "", newProducerMsg{
		ProducerID: p.id, UserID: p.owner.userID, ConnectionID: p.owner.connID, Kind: p.kind, Source: p.source,
	})
}

func (s *SFU) join(roomID, connID, userID, reqID string) error {
	r, err := s.routerFor(roomID)
	if err != nil {
		return err
	}
	s.addConnRoom(connID, roomID)
	isNew, n, stale, err := s.joinLocked(r, connID, userID, reqID)
	s.closeAll(stale)
	if err != nil {
		return err
	}
	if isNew {
		s.participantJoined(roomID, connID, userID)
		s.callUpdated(roomID, n)
	}
	return nil
}

// joinLocked does join's work under the router's lock (released by a defer,
// so that a contained panic leaves no lock held). It returns whether the
// participant is new, the participant count, and the transports of a
// previous join to close once unlocked.
func (s *SFU) joinLocked(r *router, connID, userID, reqID string) (isNew bool, n int, stale []*transport, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if h := joinHook.Load(); h != nil {
		(*h)()
	}
	if r.closed {
		return false, 0, nil, notFoundCall(r.roomID)
	}
	p := r.participants[connID]
	isNew = p == nil
	if isNew {
		p = r.addParticipant(connID, userID)
	} else {
		// A second join restarts the connection's media (a new Device):
		// its producers close (others are told), its consumers go.
		for _, pr := range sortedProducers(p.producers) {
			r.closeProducerLocked(pr)
			s.broadcastLocked(r, connID, protocol.Encode(TypeProducerClosed, "", map[string]string{
				"producer_id": pr.id, "user_id": p.userID,
			}))
		}
		stale = r.clearMediaLocked(p)
	}
	send, err := s.newTransport(p, dirSend)
	if err != nil {
		s.log.Error("create transport", "err", err)
		return false, 0, stale, protocol.Errorf(protocol.CodeInternal, "cannot create transport")
	}
	recv, err := s.newTransport(p, dirRecv)
	if err != nil {
		s.log.Error("create transport", "err", err)
		return false, 0, append(stale, send), protocol.Errorf(protocol.CodeInternal, "cannot create transport")
	}
	recv.onReady = func(t *transport) {
		// Media may have been dropped while the transport was connecting:
		// ask every video producer it consumes for a key frame (of the layer
		// each consumer waits for).
		for ssrc, c := range *t.consumers.Load() {
			if ssrc == c.ssrc {
				c.requestKeyFrame(true)
			}
		}
	}
	p.send, p.recv = send, recv
	r.transports[send.id] = send
	r.transports[recv.id] = recv

	s.sender.SendToConnection(connID, protocol.Encode(TypeRouterCapabilities, "",
		map[string]json.RawMessage{"rtp_capabilities": s.caps}))
	s.sender.SendToConnection(connID, protocol.Encode(TypeTransportCreated, reqID, transportCreated{
		SendTransport: send.info(s.cert.sha256),
		RecvTransport: recv.info(s.cert.sha256),
		IceServers:    s.iceServers(userID),
		ForceRelay:    s.cfg.ForceRelay,
	}))
	for _, o := range r.sortedParticipants() {
		if o == p {
			continue
		}
		for _, pr := range sortedProducers(o.producers) {
			s.sender.SendToConnection(connID, newProducerFrame(pr))
		}
	}
	s.announceDataProducersLocked(r, p)
	return isNew, len(r.participants), stale, nil
}

func (s *SFU) closeAll(ts []*transport) {
	for _, t := range ts {
		t.close()
	}
}

// broadcastLocked sends frame to every participant but connID.
func (s *SFU) broadcastLocked(r *router, connID string, frame []byte) {
	for _, o := range r.sortedParticipants() {
		if o.connID != connID {
			s.sender.SendToConnection(o.connID, frame)
		}
	}
}

func (s *SFU) transportOf(r *router, p *participant, id string) (*transport, error) {
	if id == "" || len(id) > 64 {
		return nil, badRequest("invalid transport_id")
	}
	t := r.transports[id]
	if t == nil || t.owner != p {
		return nil, protocol.Errorf(protocol.CodeNotFound, "unknown transport %s", id)
	}
	return t, nil
}

func (s *SFU) connectTransport(roomID, connID, transportID string, raw json.RawMessage, reqID string) error {
	var dp DtlsParameters
	if err := lenient(raw, 4096, "dtls_parameters", &dp); err != nil {
		return err
	}
	if err := dp.validate(); err != nil {
		return badRequest("%s", err.Error())
	}
	r, p, err := s.participantFor(roomID, connID)
	if err != nil {
		return err
	}
	defer r.mu.Unlock()
	t, err := s.transportOf(r, p, transportID)
	if err != nil {
		return err
	}
	if !t.setRemoteDTLS(&dp) {
		return badRequest("transport %s is already connected", transportID)
	}
	s.sender.SendToConnection(connID, protocol.Encode(TypeTransportConnected, reqID,
		map[string]string{"transport_id": t.id}))
	return nil
}

type produceRequest struct {
	RoomID        string          `json:"room_id"`
	TransportID   string          `json:"transport_id"`
	Kind          string          `json:"kind"`
	RtpParameters json.RawMessage `json:"rtp_parameters"`
	Source        *string         `json:"source"`
}

// parsedProduce is a validated produce request.
type parsedProduce struct {
	params   RtpParameters
	codec    RtpCodecParameters
	router   RtpCodecCapability
	layers   []parsedLayer
	ridBased bool
	rtxPT    uint8
	extURI   map[uint8]string
	twccID   uint8
	midExt   uint8
	ridExt   uint8
	rridExt  uint8
	temporal int
	svc      int  // VP9 SVC spatial layers in the one encoding (0: none)
	ksvc     bool // ... dependent only at key frames
	source   string
}

func parseProduce(m *produceRequest) (*parsedProduce, error) {
	if m.Kind != kindAudio && m.Kind != kindVideo {
		return nil, badRequest("kind must be audio or video")
	}
	out := &parsedProduce{}
	if m.Source != nil {
		src := *m.Source
		if src == "" || len(src) > maxSourceLen || !utf8.ValidString(src) {
			return nil, badRequest("source must be 1 to %d characters", maxSourceLen)
		}
		out.source = src
	} else if m.Kind == kindAudio {
		out.source = "mic"
	} else {
		out.source = "webcam"
	}
	rp := &out.params
	if err := lenient(m.RtpParameters, maxRTPParamSize, "rtp_parameters", rp); err != nil {
		return nil, err
	}
	if len(rp.Codecs) == 0 || len(rp.Codecs) > 32 {
		return nil, badRequest("rtp_parameters.codecs needs 1 to 32 codecs")
	}
	media := -1
	for i, c := range rp.Codecs {
		if c.MimeType == "" || c.ClockRate == 0 || c.PayloadType > 127 {
			return nil, badRequest("rtp_parameters.codecs[%d] needs mimeType, clockRate and a payloadType 0-127", i)
		}
		if media < 0 && !isRTXMime(c.MimeType) {
			media = i
		}
	}
	if media < 0 {
		return nil, badRequest("rtp_parameters has no media codec")
	}
	out.codec = rp.Codecs[media]
	if !strings.HasPrefix(strings.ToLower(out.codec.MimeType), m.Kind+"/") {
		return nil, badRequest("codec %s does not match kind %s", out.codec.MimeType, m.Kind)
	}
	rc, ok := findRouterCodec(m.Kind, out.codec.MimeType, out.codec.ClockRate, out.codec.Channels, out.codec.Parameters)
	if !ok {
		return nil, badRequest("unsupported codec %s", out.codec.MimeType)
	}
	out.router = rc
	for _, c := range rp.Codecs {
		if isRTXMime(c.MimeType) {
			if apt, ok := paramInt(c.Parameters, "apt"); ok && apt == int(out.codec.PayloadType) {
				out.rtxPT = c.PayloadType
			}
		}
	}
	layers, ridBased, err := parseEncodings(rp.Encodings, out.rtxPT)
	if err != nil {
		return nil, err
	}
	out.layers, out.ridBased = layers, ridBased
	out.temporal = 1
	for _, e := range rp.Encodings {
		if len(e.ScalabilityMode) > 16 {
			return nil, badRequest("scalabilityMode too long")
		}
		out.temporal = max(out.temporal, temporalOf(e.ScalabilityMode))
	}
	out.svc, out.ksvc = svcOf(out.codec.MimeType, rp.Encodings)
	if len(rp.HeaderExtensions) > 32 {
		return nil, badRequest("too many header extensions")
	}
	out.extURI = map[uint8]string{}
	for _, e := range rp.HeaderExtensions {
		if e.ID < 1 || e.ID > 255 || e.URI == "" || len(e.URI) > 256 {
			return nil, badRequest("invalid header extension %q id %d", e.URI, e.ID)
		}
		out.extURI[uint8(e.ID)] = e.URI
		switch e.URI {
		case extTransportCC:
			out.twccID = uint8(e.ID)
		case extMID:
			out.midExt = uint8(e.ID)
		case extRID:
			out.ridExt = uint8(e.ID)
		case extRRID:
			out.rridExt = uint8(e.ID)
		}
	}
	if out.ridBased && out.ridExt == 0 {
		return nil, badRequest("rid-based encodings need the %s header extension", extRID)
	}
	if len(rp.Rtcp.CNAME) > 256 || len(rp.MID) > 32 {
		return nil, badRequest("rtcp.cname or mid too long")
	}
	return out, nil
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

func (s *SFU) produce(connID string, m *produceRequest, reqID string) error {
	pp, err := parseProduce(m)
	if err != nil {
		return err
	}
	r, p, err := s.participantFor(m.RoomID, connID)
	if err != nil {
		return err
	}
	defer r.mu.Unlock()
	t, err := s.transportOf(r, p, m.TransportID)
	if err != nil {
		return err
	}
	if t.dir != dirSend {
		return badRequest("transport %s is a receive transport", t.id)
	}
	if len(p.producers) >= s.cfg.MaxProducersPerConnection {
		return protocol.Errorf(protocol.CodeTooLarge, "at most %d producers per connection", s.cfg.MaxProducersPerConnection)
	}
	routes := *t.producers.Load()
	for _, l := range pp.layers {
		for _, ssrc := range []uint32{l.ssrc, l.rtxSSRC} {
			if _, dup := routes[ssrc]; dup && ssrc != 0 {
				return badRequest("ssrc %d is already in use", ssrc)
			}
		}
	}
	if tw := t.twccExtID.Load(); tw != 0 && pp.twccID != 0 && uint8(tw) != pp.twccID {
		return badRequest("transport-wide-cc id differs from the transport's other producers")
	}
	pr := newProducer(pp, m.Kind, p, t)
	if pp.twccID != 0 {
		t.twccExtID.Store(int32(pp.twccID))
	}
	t.setProducerRoutes(func(mm map[uint32]producerRoute) {
		for ssrc, r := range pr.routes() {
			mm[ssrc] = r
		}
	})
	if pr.ridBased {
		t.setRIDProducers(func(l []*producer) []*producer { return append(l, pr) })
	}
	p.producers[pr.id] = pr
	r.producers[pr.id] = pr
	// The others are told before the producer gets its reply, so that once
	// the reply is in, every participant's media:new_producer is already
	// queued ahead of anything sent to them afterwards.
	s.broadcastLocked(r, connID, newProducerFrame(pr))
	s.sender.SendToConnection(connID, protocol.Encode(TypeProduceResult, reqID, map[string]string{"id": pr.id}))
	return nil
}

type consumerCreated struct {
	ID            string        `json:"id"`
	ProducerID    string        `json:"producer_id"`
	Kind          string        `json:"kind"`
	RtpParameters RtpParameters `json:"rtp_parameters"`
	// Paused echoes media:consume's paused; ProducerPaused: its producer
	// is paused by its owner now (media:producer_resumed follows).
	Paused         bool `json:"paused"`
	ProducerPaused bool `json:"producer_paused"`
}

func (s *SFU) consume(roomID, connID, producerID string, rawCaps json.RawMessage, paused bool, reqID string) error {
	var caps RtpCapabilities
	if err := lenient(rawCaps, maxRTPCapsSize, "rtp_capabilities", &caps); err != nil {
		return err
	}
	if err := validateCapabilities(&caps); err != nil {
		return badRequest("invalid rtp_capabilities: %s", err.Error())
	}
	if producerID == "" || len(producerID) > 64 {
		return badRequest("invalid producer_id")
	}
	r, p, err := s.participantFor(roomID, connID)
	if err != nil {
		return err
	}
	defer r.mu.Unlock()
	pr := r.producers[producerID]
	if pr == nil {
		return protocol.Errorf(protocol.CodeNotFound, "unknown producer %s", producerID)
	}
	if len(p.consumers) >= s.cfg.MaxConsumersPerConnection {
		return protocol.Errorf(protocol.CodeTooLarge, "at most %d consumers per connection", s.cfg.MaxConsumersPerConnection)
	}
	c, err := buildConsumer(pr, &caps)
	if err != nil {
		return err
	}
	c.id, c.owner, c.t = newID(), p, p.recv
	c.paused.Store(paused)
	c.params.MID = strconv.Itoa(p.recv.nextMid)
	p.recv.nextMid++
	p.recv.setConsumerRoutes(func(m map[uint32]*consumer) {
		m[c.ssrc] = c
		if c.rtxSSRC != 0 {
			m[c.rtxSSRC] = c
		}
	})
	p.consumers[c.id] = c
	// The reply goes out before the producer forwards to the consumer, so
	// that media:consumer_layers_changed never precedes it.
	s.sender.SendToConnection(connID, protocol.Encode(TypeConsumerCreated, reqID, consumerCreated{
		ID: c.id, ProducerID: pr.id, Kind: pr.kind, RtpParameters: c.params,
		Paused: paused, ProducerPaused: pr.paused.Load(),
	}))
	c.t.allocate(monoNow(), false)
	pr.setConsumers(func(list []*consumer) []*consumer { return append(list, c) })
	if !paused {
		c.requestKeyFrame(true)
	}
	return nil
}

// setPreferredLayers handles media:set_preferred_layers: the highest
// layers the consumer wants (clamped to what the producer has; no
// temporal_layer: the highest). The allocator re-targets at once.
func (s *SFU) setPreferredLayers(roomID, connID, consumerID string, spatial, temporal *int, reqID string) error {
	if consumerID == "" || len(consumerID) > 64 {
		return badRequest("invalid consumer_id")
	}
	if spatial == nil || *spatial < 0 || *spatial > 255 {
		return badRequest("spatial_layer must be an integer from 0")
	}
	tl := -1
	if temporal != nil {
		if *temporal < 0 || *temporal > 255 {
			return badRequest("temporal_layer must be an integer from 0")
		}
		tl = min(*temporal, maxTemporal-1)
	}
	r, p, err := s.participantFor(roomID, connID)
	if err != nil {
		return err
	}
	defer r.mu.Unlock()
	c := p.consumers[consumerID]
	if c == nil {
		return protocol.Errorf(protocol.CodeNotFound, "unknown consumer %s", consumerID)
	}
	if reqID != "" {
		s.sender.SendToConnection(connID, protocol.Encode(protocol.TypeAck, reqID, nil))
	}
	if c.p.kind == kindVideo {
		c.setPreferredLayers(min(*spatial, c.p.spatialLayers()-1), tl)
	}
	return nil
}

// buildConsumer computes a consumer's RTP parameters from the producer and
// the consuming device's capabilities (mediasoup's getConsumerRtpParameters,
// reduced to one encoding).
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
		return nil, badRequest("no compatible codec for producer %s (%s)", pr.id, rc.MimeType)
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

func (s *SFU) producerClose(roomID, connID, producerID, reqID string) error {
	if producerID == "" || len(producerID) > 64 {
		return badRequest("invalid producer_id")
	}
	r, p, err := s.participantFor(roomID, connID)
	if err != nil {
		return err
	}
	defer r.mu.Unlock()
	pr := p.producers[producerID]
	if pr == nil {
		return protocol.Errorf(protocol.CodeNotFound, "unknown producer %s", producerID)
	}
	r.closeProducerLocked(pr)
	if reqID != "" {
		s.sender.SendToConnection(connID, protocol.Encode(protocol.TypeAck, reqID, nil))
	}
	s.broadcastLocked(r, connID, protocol.Encode(TypeProducerClosed, "", map[string]string{
		"producer_id": pr.id, "user_id": p.userID,
	}))
	return nil
}
