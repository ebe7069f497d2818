package media

import (
	"bytes"
	"context"
	"encoding/json"
	"runtime/debug"
	"sort"
	"sync/atomic"
	"time"

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
	_, ok := handlers[msgType]
	return ok || unsupportedTypes[msgType]
}

const maxSourceLen = 32

// handlers maps each media:* request of PROTOCOL.md section 6 to the
// function that decodes and validates its data, resolves what it names
// (request.resolve) and calls the objects. doc.go has the table of
// message → handler → object method.
var handlers = map[string]func(q *request, data json.RawMessage) error{
	TypeJoin:               handleJoin,
	TypeConnectTransport:   handleConnectTransport,
	TypeProduce:            handleProduce,
	TypeConsume:            handleConsume,
	TypeProducerClose:      handleProducerClose,
	TypeSetPreferredLayers: handleSetPreferredLayers,
	TypeLeave:              handleLeave,
	TypeProducerPause:      handleProducerPause,
	TypeProducerResume:     handleProducerResume,
	TypeConsumerPause:      handleConsumerPause,
	TypeConsumerResume:     handleConsumerResume,
	TypeRestartICE:         handleRestartICE,
	TypeGetStats:           handleGetStats,
	TypeProduceData:        handleProduceData,
	TypeConsumeData:        handleConsumeData,
}

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
	if h := handlers[msgType]; h != nil {
		return h(&request{s: s, connID: connID, userID: userID, id: reqID}, data)
	}
	return protocol.Errorf(protocol.CodeBadRequest, "unknown message type %q", truncate(msgType, 64))
}

// request is one media:* request being handled: who sent it and the id
// its reply carries ("" for none).
type request struct {
	s      *SFU
	connID string
	userID string
	id     string
}

// reply sends the request's answer of type typ to its connection.
func (q *request) reply(typ string, v any) { q.s.notify.send(q.connID, typ, q.id, v) }

// ack answers protocol.TypeAck (nothing when the request has no id).
func (q *request) ack() { q.s.notify.ack(q.connID, q.id) }

// scope is what a request acts on once resolved: its call's router,
// locked until done, and the requesting connection's participant.
type scope struct {
	r *router
	p *participant
}

// resolve finds the call of roomID and the connection's participant in
// it, which must have joined with media:join (it has transports). On
// success the router is locked: the caller defers sc.done(). Errors:
// bad_request (invalid room_id), not_found (no call, not joined).
func (q *request) resolve(roomID string) (*scope, error) {
	r, err := q.s.routerFor(roomID)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, notFoundCall(roomID)
	}
	p := r.participants[q.connID]
	if p == nil || p.send == nil {
		r.mu.Unlock()
		return nil, protocol.Errorf(protocol.CodeNotFound, "connection has not joined the call of room %s (send media:join)", roomID)
	}
	return &scope{r: r, p: p}, nil
}

// done releases the router's lock.
func (sc *scope) done() { sc.r.mu.Unlock() }

// resolveIn is request.resolve, then find(sc, id) (one of scope's
// look-ups: transport, sendTransport, ownProducer, producer, consumer,
// dataProducer). On success the router is locked: the caller defers
// sc.done(); on an error nothing stays locked.
func resolveIn[T any](q *request, roomID, id string, find func(*scope, string) (*T, error)) (*scope, *T, error) {
	sc, err := q.resolve(roomID)
	if err != nil {
		return nil, nil, err
	}
	v, err := find(sc, id)
	if err != nil {
		sc.done()
		return nil, nil, err
	}
	return sc, v, nil
}

// resolveID is checkID(name, id), before anything is resolved (a bad id
// is bad_request even when the connection has not joined), then
// resolveIn.
func resolveID[T any](q *request, roomID, name, id string, find func(*scope, string) (*T, error)) (*scope, *T, error) {
	if err := checkID(name, id); err != nil {
		return nil, nil, err
	}
	return resolveIn(q, roomID, id, find)
}

// transport is the participant's transport id: bad_request for an
// invalid id, not_found for another's or an unknown one.
func (sc *scope) transport(id string) (*transport, error) {
	if !validID(id) {
		return nil, badRequest("invalid transport_id")
	}
	t := sc.r.transports[id]
	if t == nil || t.owner != sc.p {
		return nil, protocol.Errorf(protocol.CodeNotFound, "unknown transport %s", id)
	}
	return t, nil
}

// sendTransport is transport, which must be the send transport
// (bad_request otherwise): producers and data producers live there.
func (sc *scope) sendTransport(id string) (*transport, error) {
	t, err := sc.transport(id)
	if err != nil {
		return nil, err
	}
	if t.dir != dirSend {
		return nil, badRequest("transport %s is a receive transport", t.id)
	}
	return t, nil
}

// ownProducer is one of the participant's producers (not_found otherwise).
func (sc *scope) ownProducer(id string) (*producer, error) {
	return found(sc.p.producers[id], "producer", id)
}

// producer is any producer of the call (not_found otherwise).
func (sc *scope) producer(id string) (*producer, error) {
	return found(sc.r.producers[id], "producer", id)
}

// consumer is one of the participant's consumers (not_found otherwise).
func (sc *scope) consumer(id string) (*consumer, error) {
	return found(sc.p.consumers[id], "consumer", id)
}

// dataProducer is any data producer of the call (not_found otherwise).
func (sc *scope) dataProducer(id string) (*dataProducer, error) {
	return found(sc.r.dataProducers[id], "data producer", id)
}

func found[T any](v *T, what, id string) (*T, error) {
	if v == nil {
		return nil, protocol.Errorf(protocol.CodeNotFound, "unknown %s %s", what, id)
	}
	return v, nil
}

// atMost refuses (too_large) a participant's n+1-th object of a kind
// limited to max per connection (Config.Max...PerConnection).
func atMost(n, max int, what string) error {
	if n >= max {
		return protocol.Errorf(protocol.CodeTooLarge, "at most %d %s per connection", max, what)
	}
	return nil
}

// validID reports whether id can be an object id (1 to 64 bytes).
func validID(id string) bool { return id != "" && len(id) <= 64 }

// checkID is bad_request "invalid <name>" unless validID(id); requests
// check their ids before resolving anything.
func checkID(name, id string) error {
	if !validID(id) {
		return badRequest("invalid %s", name)
	}
	return nil
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

type roomRequest struct {
	RoomID string `json:"room_id"`
}

// ---- media:join, media:leave ----

type transportCreated struct {
	SendTransport TransportInfo `json:"send_transport"`
	RecvTransport TransportInfo `json:"recv_transport"`
	IceServers    []IceServer   `json:"ice_servers"`
	ForceRelay    bool          `json:"force_relay"`
}

// handleJoin: media:join {room_id} → router.join. Replies
// media:router_capabilities, media:transport_created (with the request
// id), then media:new_producer / media:new_data_producer per producer of
// the others. A second join of the same connection restarts its media
// (the others get media:producer_closed for each of its producers).
func handleJoin(q *request, data json.RawMessage) error {
	var m roomRequest
	if err := decode(data, &m); err != nil {
		return err
	}
	s := q.s
	r, err := s.routerFor(m.RoomID)
	if err != nil {
		return err
	}
	s.addConnRoom(q.connID, m.RoomID)
	isNew, n, stale, err := q.joinLocked(r)
	closeTransports(stale)
	if err != nil {
		return err
	}
	if isNew {
		s.participantJoined(m.RoomID, q.connID, q.userID)
		s.callUpdated(m.RoomID, n)
	}
	return nil
}

// joinLocked does media:join's work under the router's lock (released by
// a defer, so that a contained panic leaves no lock held). It returns
// whether the participant is new, the participant count, and the
// transports to close once unlocked.
func (q *request) joinLocked(r *router) (isNew bool, n int, stale []*transport, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if h := joinHook.Load(); h != nil {
		(*h)()
	}
	if r.closed {
		return false, 0, nil, notFoundCall(r.roomID)
	}
	s := q.s
	j, err := r.join(q.connID, q.userID)
	for _, pr := range j.closedProducers {
		s.notify.producerClosedLocked(r, pr)
	}
	if err != nil {
		s.log.Error("create transport", "err", err)
		return false, 0, j.stale, protocol.Errorf(protocol.CodeInternal, "cannot create transport")
	}
	p := j.p
	s.notify.send(q.connID, TypeRouterCapabilities, "", map[string]json.RawMessage{"rtp_capabilities": s.caps})
	q.reply(TypeTransportCreated, transportCreated{
		SendTransport: p.send.info(s.cert.sha256),
		RecvTransport: p.recv.info(s.cert.sha256),
		IceServers:    s.iceServers(q.userID),
		ForceRelay:    s.cfg.ForceRelay,
	})
	for _, o := range r.sortedParticipants() {
		if o == p {
			continue
		}
		for _, pr := range sortedProducers(o.producers) {
			s.notify.send(q.connID, TypeNewProducer, "", newProducerPayload(pr))
		}
	}
	for _, o := range r.sortedParticipants() {
		if o == p {
			continue
		}
		for _, dp := range sortedDataProducers(o.dataProducers) {
			s.notify.send(q.connID, TypeNewDataProducer, "", newDataProducerPayload(dp))
		}
	}
	return j.isNew, len(r.participants), j.stale, nil
}

// handleLeave: media:leave {room_id} → SFU.leave (router.leave): ack,
// media:peer_left to the others.
func handleLeave(q *request, data json.RawMessage) error {
	var m roomRequest
	if err := decode(data, &m); err != nil {
		return err
	}
	if !protocol.ValidRoomID(m.RoomID) {
		return protocol.Errorf(protocol.CodeBadRequest, "invalid room_id")
	}
	return q.s.leave(m.RoomID, q.connID, q.id)
}

// ---- transports ----

// handleConnectTransport: media:connect_transport {room_id, transport_id,
// dtls_parameters} → transport.connect; replies
// media:transport_connected {transport_id} at once (PROTOCOL.md: before
// the handshake). The DTLS parameters are mediasoup's DtlsParameters
// (RFC 8842 fingerprints), at most 4 KiB; a second connect is
// bad_request.
func handleConnectTransport(q *request, data json.RawMessage) error {
	var m struct {
		RoomID         string          `json:"room_id"`
		TransportID    string          `json:"transport_id"`
		DtlsParameters json.RawMessage `json:"dtls_parameters"`
	}
	if err := decode(data, &m); err != nil {
		return err
	}
	var dp DtlsParameters
	if err := lenient(m.DtlsParameters, 4096, "dtls_parameters", &dp); err != nil {
		return err
	}
	if err := dp.validate(); err != nil {
		return badRequest("%s", err.Error())
	}
	sc, t, err := resolveIn(q, m.RoomID, m.TransportID, (*scope).transport)
	if err != nil {
		return err
	}
	defer sc.done()
	if !t.connect(&dp) {
		return badRequest("transport %s is already connected", m.TransportID)
	}
	q.reply(TypeTransportConnected, map[string]string{"transport_id": t.id})
	return nil
}

type iceRestarted struct {
	TransportID   string        `json:"transport_id"`
	IceParameters IceParameters `json:"ice_parameters"`
}

// handleRestartICE: media:restart_ice {room_id, transport_id} →
// transport.restartICE; the reply media:ice_restarted {transport_id,
// ice_parameters} carries the new generation's ICE parameters for
// mediasoup-client's transport.restartIce({iceParameters}) (RFC 8445
// section 9). A failed restart is internal.
func handleRestartICE(q *request, data json.RawMessage) error {
	var m struct {
		RoomID      string `json:"room_id"`
		TransportID string `json:"transport_id"`
	}
	if err := decode(data, &m); err != nil {
		return err
	}
	sc, t, err := resolveIn(q, m.RoomID, m.TransportID, (*scope).transport)
	if err != nil {
		return err
	}
	defer sc.done()
	params, err := t.restartICE()
	if err != nil {
		q.s.log.Warn("ice restart failed", "transport", t.id, "err", err)
		return protocol.Errorf(protocol.CodeInternal, "ice restart of transport %s failed", t.id)
	}
	q.s.log.Debug("ice restart", "transport", t.id, "connection", q.connID)
	q.reply(TypeICERestarted, iceRestarted{TransportID: t.id, IceParameters: params})
	return nil
}

// ---- media:get_stats ----

type statsRequest struct {
	RoomID      string `json:"room_id"`
	TransportID string `json:"transport_id"`
	ProducerID  string `json:"producer_id"`
	ConsumerID  string `json:"consumer_id"`
}

type statsReply struct {
	Items []any `json:"items"`
}

// handleGetStats: media:get_stats {room_id, transport_id?, producer_id?,
// consumer_id?} → transport.stats, producer.stats, consumer.stats; reply
// media:stats {items} in mediasoup's stats shapes: the caller's own
// objects named (each must be the caller's: not_found otherwise), or all
// of them (transports, producers, consumers in creation order) when none
// is named.
func handleGetStats(q *request, data json.RawMessage) error {
	var m statsRequest
	if err := decode(data, &m); err != nil {
		return err
	}
	for _, id := range []string{m.TransportID, m.ProducerID, m.ConsumerID} {
		if len(id) > 64 {
			return badRequest("invalid id")
		}
	}
	sc, err := q.resolve(m.RoomID)
	if err != nil {
		return err
	}
	defer sc.done()
	p := sc.p
	now := time.Now()
	items := []any{}
	if m.TransportID != "" {
		t, err := sc.transport(m.TransportID)
		if err != nil {
			return err
		}
		items = append(items, t.stats(now))
	}
	if m.ProducerID != "" {
		pr, err := sc.ownProducer(m.ProducerID)
		if err != nil {
			return err
		}
		items = append(items, pr.stats(now))
	}
	if m.ConsumerID != "" {
		c, err := sc.consumer(m.ConsumerID)
		if err != nil {
			return err
		}
		items = append(items, c.stats(now))
	}
	if m.TransportID == "" && m.ProducerID == "" && m.ConsumerID == "" {
		for _, t := range []*transport{p.send, p.recv} {
			if t != nil {
				items = append(items, t.stats(now))
			}
		}
		for _, pr := range sortedProducers(p.producers) {
			items = append(items, pr.stats(now))
		}
		for _, c := range sortedConsumers(p.consumers) {
			items = append(items, c.stats(now))
		}
	}
	q.reply(TypeStats, statsReply{Items: items})
	return nil
}
