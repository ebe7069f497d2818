package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/parleyhq/parley/internal/access"
	"github.com/parleyhq/parley/internal/api"
	"github.com/parleyhq/parley/internal/cluster"
	"github.com/parleyhq/parley/internal/gateway"
	"github.com/parleyhq/parley/internal/media"
	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/safe"
	"github.com/parleyhq/parley/internal/webhook"
)

// wireMedia creates the SFU, routes media:* messages to it (after the
// membership check), tells it about closed connections, registers its
// metrics, and serves the call endpoints.
//
// --dev implies --media-loopback. When the machine has no IPv4 address to
// announce (media.ErrNoAnnouncedIP) the server starts without calls: one
// warning names the flags, rooms and chat serve as usual, media:* requests
// answer `unsupported` ("calls are disabled on this server: ...") and the
// REST call endpoints answer 503 with the same error body.
func (s *Server) wireMedia(base *api.Base) error {
	cfg := s.cfg
	mc := media.Config{
		Workers: cfg.MediaWorkers, ListenIP: cfg.MediaListenIP, AnnouncedIP: cfg.MediaAnnouncedIP,
		RTCMinPort: uint16(cfg.MediaRTCMinPort), RTCMaxPort: uint16(cfg.MediaRTCMaxPort),
		UDPMuxPort: cfg.MediaUDPPort, TCPPort: cfg.MediaTCPPort, IncludeLoopback: cfg.MediaLoopback || cfg.Dev,
		TURNUsername: cfg.TURNUsername, TURNPassword: cfg.TURNPassword,
		TURNSharedSecret: cfg.TURNSharedSecret, TURNCredentialTTL: cfg.TURNCredentialTTL, ForceRelay: cfg.TURNForceRelay,
		EmbeddedTURN: media.EmbeddedTURN{Enabled: cfg.TURNEmbedded, ListenIP: cfg.TURNEmbeddedListen,
			Port: cfg.TURNEmbeddedPort, Realm: cfg.TURNEmbeddedRealm, RelayIP: cfg.MediaAnnouncedIP},
		DisableDataChannels: !cfg.MediaDataChannels, MaxDataMessageSize: cfg.MediaDataMaxMessageSize,
		DataSendBuffer:   cfg.MediaDataSendBuffer,
		TransportTimeout: orNever(cfg.MediaTransportTimeout), CallIdleTimeout: orNever(cfg.MediaCallIdleTimeout),
		Panics: s.Metrics,
	}
	for _, u := range strings.Split(cfg.TURNURL, ",") {
		if u = strings.TrimSpace(u); u != "" {
			mc.TURNURLs = append(mc.TURNURLs, u)
		}
	}
	// The SFU adds component=media to the logger it is given.
	log := s.log.With("component", "media")
	relay := newCallRelay(s, log)
	sfu, err := newSFU(mc, relaySender{relay}, callEvents{s}, s.log)
	if errors.Is(err, media.ErrNoAnnouncedIP) {
		reason := "no IPv4 address to announce in ICE candidates"
		log.Warn("calls disabled: " + reason + "; set --media-announced-ip (PARLEY_MEDIA_ANNOUNCED_IP) to the address clients reach," +
			" or --media-loopback (PARLEY_MEDIA_LOOPBACK) for local use; rooms and chat are unaffected")
		sfu, err = media.Disabled(reason+" (set --media-announced-ip or --media-loopback)", s.log), nil
	}
	if err != nil {
		return err
	}
	s.SFU = sfu
	relay.sfu = sfu
	s.calls = relay
	s.closers = append(s.closers, func(context.Context) error { return sfu.Close() })
	if err := s.Metrics.Registry.Register(sfu.Collector()); err != nil {
		return fmt.Errorf("media metrics: %w", err)
	}
	s.Gateway.Route("media", gateway.HandlerFunc(s.handleMedia))
	s.Gateway.OnLifecycle(mediaLifecycle{relay})
	if reason := sfu.CallsDisabled(); reason != "" {
		callsDisabled(s.mux, reason)
		return nil
	}
	if s.Cluster != nil {
		relay.node, relay.self = s.Cluster, s.Cluster.NodeID()
		ctx, cancel := context.WithTimeout(context.Background(), relayTimeout)
		err := s.Cluster.StartCalls(ctx, relay)
		cancel()
		if err != nil {
			return err
		}
	}
	(&api.Calls{Base: base, Calls: relay, Hub: s.Hub, Access: s.Access}).Register(s.mux)
	return nil
}

// orNever maps a configured timeout of 0 ("never") to media.Config's -1
// (its 0 means the default).
func orNever(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// newSFU is media.New; tests replace it to simulate a host without a
// routable IPv4 address.
var newSFU = media.New

// callsDisabled serves the call endpoints (the routes api.Calls registers)
// with 503 {"error":"unsupported","message":"calls are disabled on this
// server: <reason>"} when the SFU could not start.
func callsDisabled(mux *http.ServeMux, reason string) {
	h := func(w http.ResponseWriter, _ *http.Request) {
		api.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{
			"error": protocol.CodeUnsupported, "message": "calls are disabled on this server: " + reason,
		})
	}
	for _, p := range []string{"POST /api/rooms/{id}/call/start", "POST /api/rooms/{id}/call/join",
		"POST /api/rooms/{id}/call/leave", "POST /api/rooms/{id}/call/end", "GET /api/rooms/{id}/call/participants"} {
		mux.HandleFunc(p, h)
	}
}

// handleMedia routes media:* to the SFU after asking the policy for
// access.Call (members; every user in dev mode; PROTOCOL.md §6). Errors:
// bad_request without a valid room_id, the policy's refusal.
func (s *Server) handleMedia(ctx context.Context, sess gateway.Session, env protocol.Envelope) error {
	var d struct {
		RoomID string `json:"room_id"`
	}
	// Only the room id is read here; the SFU validates the rest strictly.
	if len(env.Data) == 0 || json.Unmarshal(env.Data, &d) != nil {
		return protocol.Errorf(protocol.CodeBadRequest, "data with room_id is required")
	}
	if err := protocol.CheckRoomID("room_id", d.RoomID); err != nil {
		return err
	}
	sub := access.User(sess.Claims())
	sub.UserID = sess.UserID()
	if err := s.Access.Decide(ctx, sub, d.RoomID, access.Call); err != nil {
		return err
	}
	return s.calls.Handle(ctx, sess.ID(), sess.UserID(), env.Type, env.ID, d.RoomID, env.Data)
}

// callEvents fans call lifecycle events out to the room's members.
type callEvents struct{ s *Server }

func (e callEvents) toMembers(roomID, typ string, data any) {
	members, err := e.s.Store.Members(context.Background(), roomID)
	if err != nil {
		e.s.log.Warn("call event: members", "room", roomID, "err", err)
		return
	}
	e.s.Broker.ToUsers(members, protocol.Encode(typ, "", data), "")
}

func (e callEvents) CallStarted(roomID, startedBy string) {
	e.s.emit(webhook.CallStarted, CallEvent{RoomID: roomID, StartedBy: startedBy})
	e.toMembers(roomID, protocol.TypeRoomCallStarted, map[string]string{"room_id": roomID, "started_by": startedBy})
}

func (e callEvents) CallUpdated(roomID string, n int) {
	e.toMembers(roomID, protocol.TypeRoomCallUpdated, map[string]any{"room_id": roomID, "participant_count": n})
}

func (e callEvents) CallEnded(roomID string) {
	e.s.emit(webhook.CallEnded, CallEvent{RoomID: roomID})
	e.toMembers(roomID, protocol.TypeRoomCallEnded, map[string]string{"room_id": roomID})
}

// CallIdle implements media.CallIdler: a call left without participants
// for --media-call-idle-timeout ends like call/end (members get
// room:call_ended), through the relay so that its cluster lease goes too.
func (e callEvents) CallIdle(roomID string) {
	if r := e.s.calls; r != nil {
		r.endIdle(roomID)
	}
}

type mediaLifecycle struct{ r *callRelay }

func (mediaLifecycle) Connected(gateway.Session, bool) {}
func (m mediaLifecycle) Disconnected(s gateway.Session, _ bool) {
	m.r.Disconnected(s.ID())
}

// ---- calls across nodes (docs/cluster.md, "Calls") ----
//
// A call lives on one media node: the node that holds the room's call
// lease (cluster.Node.AcquireCall, KV <cluster>_calls) runs its router in
// its SFU. Every other node decides access for its own clients and relays
// their call requests (REST and media:*) to the media node, which records
// which node each relayed connection is on: its SFU's frames for that
// connection (relaySender) go back to that node (cluster.Node.SendConn)
// and are delivered there (ConnFrame). Room-wide call events go through
// the Broker, once, from the media node (callEvents). On a single node
// (no cluster) every operation is the local SFU's, as before.
//
// Bookkeeping, under callRelay.mu:
//   - held: the calls this node runs, with their leases (media side);
//   - remote: participant connections on other nodes → their node (media
//     side), dropped on the caller's disconnect notice or its NodeDown;
//   - relayed / inCall: this node's connections → the media nodes they
//     sent requests to / the calls they joined there (caller side), for
//     the disconnect notice and for media:room_closed when a media node
//     dies;
//   - toldClosed: the (connection, call) pairs NodeDown told
//     media:room_closed, so that the media node's own room_closed for
//     the same call, arriving later, is not delivered a second time
//     (a pair is forgotten when that frame comes, when the connection
//     joins the call again, or when it closes).

// relayTimeout bounds one relayed call request (and StartCalls).
const relayTimeout = 10 * time.Second

// Relayed operations (cluster.CallRequest.Op).
const (
	opStart        = "start"
	opJoin         = "join"
	opLeave        = "leave"
	opEnd          = "end"
	opParticipants = "participants"
	opMedia        = "media"
	opDisconnect   = "disconnect"
	opRevoke       = "revoke"
)

// codeMoved answers a request for a call this node does not hold (any
// more): the requester reads the lease again. Never sent to clients.
const codeMoved = "moved"

var errMoved = errors.New("call lease moved")

// roomClosedPrefix starts every media:room_closed frame (protocol.Encode).
var roomClosedPrefix = []byte(`{"type":"` + media.TypeRoomClosed + `"`)

type callRelay struct {
	s    *Server
	sfu  *media.SFU
	node *cluster.Node // nil on a single node
	self string
	log  *slog.Logger

	leaseMu sync.Mutex // serialises a call's start and end on this node with its lease

	mu      sync.Mutex
	held    map[string]cluster.CallLease
	remote  map[string]string
	relayed map[string]map[string]struct{}
	inCall  map[string]map[string]string
	// toldClosed: connection → calls NodeDown sent media:room_closed for.
	toldClosed map[string]map[string]struct{}
}

func newCallRelay(s *Server, log *slog.Logger) *callRelay {
	return &callRelay{s: s, log: log, held: map[string]cluster.CallLease{}, remote: map[string]string{},
		relayed: map[string]map[string]struct{}{}, inCall: map[string]map[string]string{},
		toldClosed: map[string]map[string]struct{}{}}
}

var (
	_ api.CallService     = (*callRelay)(nil)
	_ cluster.CallHandler = (*callRelay)(nil)
)

// relaySender is the SFU's Sender: a participant on another node gets its
// frames through that node; a local one straight from the hub.
type relaySender struct{ r *callRelay }

func (h relaySender) SendToConnection(connID string, frame []byte) bool {
	r := h.r
	if r.node != nil {
		r.mu.Lock()
		node, ok := r.remote[connID]
		r.mu.Unlock()
		if ok {
			if err := r.node.SendConn(node, connID, frame); err != nil {
				r.log.Debug("frame to a participant on another node", "node", node, "err", err)
				return false
			}
			return true
		}
	}
	return r.s.Hub.SendToConn(connID, frame)
}

// where returns the media node of roomID's call: "" when there is no call
// (no lease, a dead or draining holder, or a lease of this node id that
// this process does not hold: a previous run's).
func (r *callRelay) where(ctx context.Context, roomID string) (string, error) {
	if !protocol.ValidRoomID(roomID) {
		return "", protocol.Errorf(protocol.CodeBadRequest, "invalid room_id")
	}
	l, ok, err := r.node.CallLease(ctx, roomID)
	if err != nil {
		r.log.Error("reading a call lease", "room", roomID, "err", err)
		return "", protocol.Errorf(protocol.CodeInternal, "call lookup failed; retry")
	}
	switch {
	case !ok:
		return "", nil
	case l.Node == r.self:
		if r.holds(roomID, l) {
			return r.self, nil
		}
		return "", nil
	case r.node.Alive(l.Node):
		return l.Node, nil
	}
	return "", nil
}

// callNode is where: the media node of roomID's call, or not_found when
// the room has no call.
func (r *callRelay) callNode(ctx context.Context, roomID string) (string, error) {
	mn, err := r.where(ctx, roomID)
	if err == nil && mn == "" {
		err = errNoCall(roomID)
	}
	return mn, err
}

// errNoCall is the not_found of a room without a call.
func errNoCall(roomID string) *protocol.Error {
	return protocol.Errorf(protocol.CodeNotFound, "no call in room %s", roomID)
}

func (r *callRelay) holds(roomID string, l cluster.CallLease) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	h, ok := r.held[roomID]
	return ok && h == l
}

// request relays req to node and maps the reply to an error or its data.
func (r *callRelay) request(ctx context.Context, node string, req cluster.CallRequest) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, relayTimeout)
	defer cancel()
	rep, err := r.node.RequestCall(ctx, node, req)
	if err != nil {
		r.log.Warn("relaying a call request", "op", req.Op, "room", req.RoomID, "node", node, "err", err)
		return nil, protocol.Errorf(protocol.CodeInternal, "the call's media node did not answer; retry")
	}
	switch rep.Code {
	case "":
		return rep.Data, nil
	case codeMoved:
		return nil, errMoved
	}
	return nil, protocol.Errorf(rep.Code, "%s", rep.Message)
}

func (r *callRelay) track(connID, node, roomID string, joined bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	putPair(r.relayed, connID, node, struct{}{})
	if roomID == "" {
		return
	}
	if joined {
		deletePair(r.toldClosed, connID, roomID)
		putPair(r.inCall, connID, roomID, node)
	} else {
		deletePair(r.inCall, connID, roomID)
	}
}

// putPair sets m[conn][key] = v, making the inner map when missing: the
// relay's bookkeeping maps are connection → key → value.
func putPair[V any](m map[string]map[string]V, conn, key string, v V) {
	inner := m[conn]
	if inner == nil {
		inner = map[string]V{}
		m[conn] = inner
	}
	inner[key] = v
}

// deletePair deletes m[conn][key], and m[conn] once it is empty.
func deletePair[V any](m map[string]map[string]V, conn, key string) {
	if inner := m[conn]; inner != nil {
		delete(inner, key)
		if len(inner) == 0 {
			delete(m, conn)
		}
	}
}

// StartCall implements api.CallService: a live media node's call is joined
// (the relayed start is idempotent there); with none, this node takes the
// lease (compare-and-set: one node wins a race, the others join it) and
// starts the call in its SFU.
func (r *callRelay) StartCall(ctx context.Context, roomID, userID string) (json.RawMessage, error) {
	if r.node == nil {
		caps, _, err := r.sfu.StartCall(roomID, userID)
		return caps, err
	}
	if !protocol.ValidRoomID(roomID) {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "invalid room_id")
	}
	for range 5 {
		l, ok, err := r.node.CallLease(ctx, roomID)
		if err != nil {
			r.log.Error("reading a call lease", "room", roomID, "err", err)
			return nil, protocol.Errorf(protocol.CodeInternal, "call lookup failed; retry")
		}
		switch {
		case ok && l.Node == r.self && r.holds(roomID, l):
			caps, err := r.startHeld(roomID, userID)
			if errors.Is(err, errMoved) {
				continue
			}
			return caps, err
		case ok && l.Node != r.self && r.node.Alive(l.Node):
			caps, err := r.request(ctx, l.Node, cluster.CallRequest{Op: opStart, RoomID: roomID, UserID: userID})
			if errors.Is(err, errMoved) {
				continue
			}
			return caps, err
		}
		var prev *cluster.CallLease
		if ok {
			prev = &l
		}
		caps, err := r.take(ctx, roomID, userID, prev)
		if errors.Is(err, cluster.ErrCallLeaseTaken) {
			continue
		}
		return caps, err
	}
	return nil, protocol.Errorf(protocol.CodeInternal, "call start contended; retry")
}

// take acquires the call lease and starts the call here.
func (r *callRelay) take(ctx context.Context, roomID, userID string, prev *cluster.CallLease) (json.RawMessage, error) {
	r.leaseMu.Lock()
	defer r.leaseMu.Unlock()
	l, err := r.node.AcquireCall(ctx, roomID, prev)
	if errors.Is(err, cluster.ErrCallLeaseTaken) {
		return nil, err
	}
	if err != nil {
		r.log.Error("taking a call lease", "room", roomID, "err", err)
		return nil, protocol.Errorf(protocol.CodeInternal, "call start failed; retry")
	}
	r.mu.Lock()
	r.held[roomID] = l
	r.mu.Unlock()
	caps, _, err := r.sfu.StartCall(roomID, userID)
	if err != nil {
		r.release(ctx, roomID)
		return nil, err
	}
	r.log.Info("media node of the call", "room", roomID, "epoch", l.Epoch)
	return caps, nil
}

// startHeld starts (or finds) the call of a room whose lease this node
// holds; errMoved when it does not hold it (any more).
func (r *callRelay) startHeld(roomID, userID string) (json.RawMessage, error) {
	r.leaseMu.Lock()
	defer r.leaseMu.Unlock()
	r.mu.Lock()
	_, ok := r.held[roomID]
	r.mu.Unlock()
	if !ok {
		return nil, errMoved
	}
	caps, _, err := r.sfu.StartCall(roomID, userID)
	return caps, err
}

// release forgets the room's lease and deletes it (if unchanged).
// leaseMu is held.
func (r *callRelay) release(ctx context.Context, roomID string) {
	r.mu.Lock()
	l, ok := r.held[roomID]
	delete(r.held, roomID)
	r.mu.Unlock()
	if !ok {
		return
	}
	if _, err := r.node.ClearCall(ctx, roomID, l); err != nil {
		// The lease stays until a call/start finds this node gone or
		// takes it over (this process no longer holds it: where()).
		r.log.Warn("releasing a call lease", "room", roomID, "err", err)
	}
}

// endHeld ends a call this node runs (media:room_closed to every
// participant, wherever it is; room:call_ended to the members) and
// releases its lease.
func (r *callRelay) endHeld(ctx context.Context, roomID string) error {
	r.leaseMu.Lock()
	defer r.leaseMu.Unlock()
	ended := r.sfu.EndCall(roomID)
	r.mu.Lock()
	_, held := r.held[roomID]
	r.mu.Unlock()
	if held {
		r.release(ctx, roomID)
	}
	if !ended {
		return errNoCall(roomID)
	}
	return nil
}

// endIdle ends a call of this node that stayed without participants (the
// SFU checks that again under its locks) and releases its lease.
func (r *callRelay) endIdle(roomID string) {
	r.leaseMu.Lock()
	defer r.leaseMu.Unlock()
	if !r.sfu.EndIdleCall(roomID) || r.node == nil {
		return
	}
	r.mu.Lock()
	_, held := r.held[roomID]
	r.mu.Unlock()
	if held {
		ctx, cancel := context.WithTimeout(context.Background(), relayTimeout)
		defer cancel()
		r.release(ctx, roomID)
	}
}

// EndAll ends every call this node runs and releases their leases (drain:
// participants elsewhere get media:room_closed and rejoin on a live node).
func (r *callRelay) EndAll(ctx context.Context) {
	if r == nil || r.node == nil {
		return
	}
	r.mu.Lock()
	rooms := make([]string, 0, len(r.held))
	for room := range r.held {
		rooms = append(rooms, room)
	}
	r.mu.Unlock()
	sort.Strings(rooms)
	for _, room := range rooms {
		_ = r.endHeld(ctx, room)
	}
	if len(rooms) > 0 {
		r.log.Info("drain: ended the calls of this media node", "calls", len(rooms))
	}
}

// EndCall implements api.CallService.
func (r *callRelay) EndCall(ctx context.Context, roomID string) error {
	if r.node == nil {
		if !r.sfu.EndCall(roomID) {
			return errNoCall(roomID)
		}
		return nil
	}
	mn, err := r.callNode(ctx, roomID)
	switch {
	case err != nil:
		return err
	case mn == r.self:
		return r.endHeld(ctx, roomID)
	}
	_, err = r.request(ctx, mn, cluster.CallRequest{Op: opEnd, RoomID: roomID})
	if errors.Is(err, errMoved) {
		return errNoCall(roomID)
	}
	return err
}

// JoinCall implements api.CallService.
func (r *callRelay) JoinCall(ctx context.Context, roomID, connID, userID string) error {
	if r.node == nil {
		return r.sfu.JoinCall(roomID, connID, userID)
	}
	mn, err := r.callNode(ctx, roomID)
	switch {
	case err != nil:
		return err
	case mn == r.self:
		return r.sfu.JoinCall(roomID, connID, userID)
	}
	r.track(connID, mn, "", false)
	defer r.forgetIfClosed(connID)
	if _, err := r.request(ctx, mn, cluster.CallRequest{Op: opJoin, RoomID: roomID, ConnID: connID, UserID: userID}); err != nil {
		return err
	}
	r.track(connID, mn, roomID, true)
	return nil
}

func (r *callRelay) leaveLocal(roomID, connID, userID string) error {
	if !r.sfu.CallActive(roomID) {
		return errNoCall(roomID)
	}
	if connID != "" {
		r.sfu.LeaveCall(roomID, connID)
	} else {
		r.sfu.LeaveUser(roomID, userID)
	}
	return nil
}

// LeaveCall implements api.CallService.
func (r *callRelay) LeaveCall(ctx context.Context, roomID, connID, userID string) error {
	if r.node == nil {
		return r.leaveLocal(roomID, connID, userID)
	}
	mn, err := r.callNode(ctx, roomID)
	switch {
	case err != nil:
		return err
	case mn == r.self:
		return r.leaveLocal(roomID, connID, userID)
	}
	if _, err := r.request(ctx, mn, cluster.CallRequest{Op: opLeave, RoomID: roomID, ConnID: connID, UserID: userID}); err != nil {
		return err
	}
	if connID != "" {
		r.track(connID, mn, roomID, false)
	}
	return nil
}

// Participants implements api.CallService.
func (r *callRelay) Participants(ctx context.Context, roomID string) ([]media.Participant, error) {
	if r.node == nil {
		return r.sfu.Participants(roomID)
	}
	mn, err := r.callNode(ctx, roomID)
	switch {
	case err != nil:
		return nil, err
	case mn == r.self:
		return r.sfu.Participants(roomID)
	}
	data, err := r.request(ctx, mn, cluster.CallRequest{Op: opParticipants, RoomID: roomID})
	if err != nil {
		return nil, err
	}
	var ps []media.Participant
	if err := json.Unmarshal(data, &ps); err != nil {
		return nil, protocol.Errorf(protocol.CodeInternal, "malformed participants from the media node")
	}
	return ps, nil
}

// Handle runs one media:* request of a local connection (access already
// decided) where the room's call lives.
func (r *callRelay) Handle(ctx context.Context, connID, userID, typ, reqID, roomID string, data json.RawMessage) error {
	if r.node == nil {
		return r.sfu.Handle(ctx, connID, userID, typ, reqID, data)
	}
	mn, err := r.where(ctx, roomID)
	if err != nil {
		return err
	}
	if mn == "" || mn == r.self {
		return r.sfu.Handle(ctx, connID, userID, typ, reqID, data)
	}
	r.track(connID, mn, "", false)
	defer r.forgetIfClosed(connID)
	_, err = r.request(ctx, mn, cluster.CallRequest{Op: opMedia, RoomID: roomID, ConnID: connID, UserID: userID,
		Type: typ, ID: reqID, Data: data})
	if errors.Is(err, errMoved) {
		err = errNoCall(roomID)
	}
	if err != nil {
		return err
	}
	switch typ {
	case media.TypeJoin:
		r.track(connID, mn, roomID, true)
	case media.TypeLeave:
		r.track(connID, mn, roomID, false)
	}
	return nil
}

// CallActive reports whether the room has a call anywhere (access probe).
func (r *callRelay) CallActive(ctx context.Context, roomID string) (bool, error) {
	if r.node == nil {
		return r.sfu.CallActive(roomID), nil
	}
	mn, err := r.where(ctx, roomID)
	return mn != "", err
}

// Disconnected makes a closed local connection leave its calls: here, and
// on every media node it sent requests to (a notice, in order after them).
func (r *callRelay) Disconnected(connID string) {
	r.sfu.Disconnect(connID)
	if r.node == nil {
		return
	}
	r.mu.Lock()
	nodes := r.relayed[connID]
	delete(r.relayed, connID)
	delete(r.inCall, connID)
	delete(r.toldClosed, connID)
	r.mu.Unlock()
	for node := range nodes {
		if err := r.node.NotifyCall(node, cluster.CallRequest{Op: opDisconnect, ConnID: connID}); err != nil {
			r.log.Warn("telling a media node about a closed connection", "node", node, "err", err)
		}
	}
}

// forgetIfClosed repeats Disconnected for a connection that closed while
// one of its requests was being relayed (the notice may have gone out
// before the request was tracked, or reached the media node before it).
func (r *callRelay) forgetIfClosed(connID string) {
	if _, ok := r.s.Hub.Conn(connID); !ok {
		r.Disconnected(connID)
	}
}

// RefreshUser ends the call participation of a user who lost access.Call
// in the room (a member removed on any node), on the call's media node:
// their connections, wherever they are, leave the call (media:peer_left
// to the others) and get media:room_closed {room_id}.
func (r *callRelay) RefreshUser(ctx context.Context, roomID, userID string) {
	if r.node == nil {
		r.revokeLocal(ctx, roomID, userID)
		return
	}
	mn, err := r.where(ctx, roomID)
	switch {
	case err != nil || mn == "":
		return
	case mn == r.self:
		r.revokeLocal(ctx, roomID, userID)
		return
	}
	if _, err := r.request(ctx, mn, cluster.CallRequest{Op: opRevoke, RoomID: roomID, UserID: userID}); err != nil {
		r.log.Warn("relaying a call revocation", "room", roomID, "node", mn, "err", err)
	}
}

// revokeLocal re-decides access.Call for the user (a store failure counts
// as a loss) and, when lost, makes their connections leave the call here.
func (r *callRelay) revokeLocal(ctx context.Context, roomID, userID string) {
	if !r.sfu.CallActive(roomID) {
		return
	}
	if err := r.s.Access.Decide(ctx, access.Subject{UserID: userID}, roomID, access.Call); err == nil {
		return
	}
	left := r.sfu.LeaveUser(roomID, userID)
	frame := protocol.Encode(media.TypeRoomClosed, "", map[string]string{"room_id": roomID})
	for _, conn := range left {
		relaySender{r}.SendToConnection(conn, frame)
	}
}

// CallRequest implements cluster.CallHandler: a request relayed to this
// node as the media node (on the calls goroutine).
func (r *callRelay) CallRequest(req cluster.CallRequest) cluster.CallReply {
	ctx, cancel := context.WithTimeout(context.Background(), relayTimeout)
	defer cancel()
	if req.ConnID != "" && req.Op != opDisconnect && req.Node != "" && req.Node != r.self {
		r.mu.Lock()
		r.remote[req.ConnID] = req.Node
		r.mu.Unlock()
	}
	var data []byte
	var err error
	switch req.Op {
	case opStart:
		data, err = r.startHeld(req.RoomID, req.UserID)
	case opJoin:
		err = r.sfu.JoinCall(req.RoomID, req.ConnID, req.UserID)
	case opLeave:
		err = r.leaveLocal(req.RoomID, req.ConnID, req.UserID)
	case opEnd:
		err = r.endHeld(ctx, req.RoomID)
	case opParticipants:
		var ps []media.Participant
		if ps, err = r.sfu.Participants(req.RoomID); err == nil {
			data, err = json.Marshal(ps)
		}
	case opMedia:
		err = r.sfu.Handle(ctx, req.ConnID, req.UserID, req.Type, req.ID, req.Data)
	case opDisconnect:
		r.mu.Lock()
		delete(r.remote, req.ConnID)
		r.mu.Unlock()
		r.sfu.Disconnect(req.ConnID)
	case opRevoke:
		r.revokeLocal(ctx, req.RoomID, req.UserID)
	default:
		err = protocol.Errorf(protocol.CodeBadRequest, "unknown call operation")
	}
	if errors.Is(err, errMoved) {
		return cluster.CallReply{Code: codeMoved, Message: "not the media node of this call"}
	}
	if err != nil {
		pe := protocol.AsError(err)
		return cluster.CallReply{Code: pe.Code, Message: pe.Message}
	}
	return cluster.CallReply{Data: data}
}

// ConnFrame implements cluster.CallHandler: a media node's frame for a
// local connection. A media:room_closed ends the connection's membership
// of that call here too.
func (r *callRelay) ConnFrame(connID string, frame []byte) {
	if bytes.HasPrefix(frame, roomClosedPrefix) && !r.roomClosedFrame(connID, frame) {
		return
	}
	r.s.Hub.SendToConn(connID, frame)
}

// roomClosedFrame ends connID's membership of the call a media:room_closed
// frame names and reports whether to deliver the frame: false when
// NodeDown already told the connection that call was closed (the media
// node drained and its own room_closed came after the node-down notice;
// the client must see one room_closed per call, docs/cluster.md).
func (r *callRelay) roomClosedFrame(connID string, frame []byte) bool {
	var f struct {
		Data struct {
			RoomID string `json:"room_id"`
		} `json:"data"`
	}
	if json.Unmarshal(frame, &f) != nil || f.Data.RoomID == "" {
		return true
	}
	room := f.Data.RoomID
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, in := r.inCall[connID][room]; in {
		deletePair(r.inCall, connID, room)
		return true
	}
	if _, told := r.toldClosed[connID][room]; told {
		deletePair(r.toldClosed, connID, room)
		return false
	}
	return true
}

// forgetNode drops node from the bookkeeping: the participants it relayed
// here (gone), and this node's connections in calls on it (closes, to be
// told media:room_closed; recorded in toldClosed).
func (r *callRelay) forgetNode(node string) (gone []string, closes []connRoom) {
	r.mu.Lock()
	for conn, n := range r.remote {
		if n == node {
			gone = append(gone, conn)
			delete(r.remote, conn)
		}
	}
	for conn, rooms := range r.inCall {
		for room, mn := range rooms {
			if mn == node {
				closes = append(closes, connRoom{conn, room})
				delete(rooms, room)
				putPair(r.toldClosed, conn, room, struct{}{})
			}
		}
		if len(rooms) == 0 {
			delete(r.inCall, conn)
		}
	}
	for conn, nodes := range r.relayed {
		delete(nodes, node)
		if len(nodes) == 0 {
			delete(r.relayed, conn)
		}
	}
	r.mu.Unlock()
	return gone, closes
}

// connRoom is one connection's membership of one call.
type connRoom struct{ conn, room string }

// NodeDown implements cluster.CallHandler: node died or drains. As a media
// node, this node's calls drop that node's participants (media:peer_left
// to the others); as a caller's node, its connections in calls on that
// node get media:room_closed, and the dead node's call leases are cleared
// (one node wins each; it tells the members room:call_ended).
func (r *callRelay) NodeDown(node string) {
	gone, closes := r.forgetNode(node)
	sort.Strings(gone)
	for _, conn := range gone {
		r.sfu.Disconnect(conn)
	}
	rooms := map[string]struct{}{}
	for _, c := range closes {
		r.s.Hub.SendToConn(c.conn, protocol.Encode(media.TypeRoomClosed, "", map[string]string{"room_id": c.room}))
		rooms[c.room] = struct{}{}
	}
	if len(gone)+len(closes) > 0 {
		r.log.Info("calls: node down", "node", node, "participants_dropped", len(gone), "connections_told_room_closed", len(closes))
	}
	if len(rooms) == 0 {
		return
	}
	safe.Go(r.log, r.s.Metrics, safe.Broker, func() {
		for room := range rooms {
			ctx, cancel := context.WithTimeout(context.Background(), relayTimeout)
			l, ok, err := r.node.CallLease(ctx, room)
			if err == nil && ok && l.Node == node {
				if deleted, err := r.node.ClearCall(ctx, room, l); err == nil && deleted {
					callEvents{r.s}.CallEnded(room)
				}
			}
			cancel()
		}
	}, nil)
}
