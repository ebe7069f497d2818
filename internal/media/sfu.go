package media

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/pion/logging"
	"github.com/pion/turn/v5"

	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/safe"
)

// Sender delivers a frame (protocol.Encode output) to one connection. It is
// the hub; it must not block.
type Sender interface {
	SendToConnection(connID string, frame []byte) bool
}

// Events receives call lifecycle events, which the caller fans out to the
// room's members.
type Events interface {
	CallStarted(roomID, startedBy string)
	CallUpdated(roomID string, participantCount int)
	CallEnded(roomID string)
}

// ParticipantEvents, when the Events given to New also implement it, is
// told of every participant that joins or leaves a call (webhooks): each
// join is followed by exactly one leave, the end of the call included.
// Called without the SFU's locks held.
type ParticipantEvents interface {
	ParticipantJoined(roomID, connID, userID string)
	ParticipantLeft(roomID, connID, userID string)
}

func (s *SFU) participantJoined(roomID, connID, userID string) {
	if pe, ok := s.events.(ParticipantEvents); ok {
		pe.ParticipantJoined(roomID, connID, userID)
	}
}

func (s *SFU) participantLeft(roomID, connID, userID string) {
	if pe, ok := s.events.(ParticipantEvents); ok {
		pe.ParticipantLeft(roomID, connID, userID)
	}
}

// Participant is one connection in a call.
type Participant struct {
	ConnectionID string         `json:"connection_id"`
	UserID       string         `json:"user_id"`
	Producers    []ProducerInfo `json:"producers"`
}

// SFU is the selective forwarding unit: one router per call, routers spread
// over a pool of workers.
type SFU struct {
	cfg    Config
	sender Sender
	notify notifier // encodes every media:* message (signalling_events.go)
	events Events
	log    *slog.Logger
	lf     logging.LoggerFactory

	cert           *certificate
	sharedEP       *udpEndpoint
	tcpEP          *tcpEndpoint // Config.TCPPort
	ports          *portAllocator
	candidateIPs   []string
	listenLoopback bool
	caps           json.RawMessage

	turnServer *turn.Server
	turnSecret string
	turnURLs   []string
	turnAddr   *net.UDPAddr

	workers    []*worker
	nextWorker atomic.Uint32

	disabled string // why calls are disabled (Disabled); "" normally

	// Node-wide counters (metrics). fwd is indexed by kindIndex.
	fwd               [2]fwdCounters
	transportFailures atomic.Uint64
	ctr               nodeCounters // stats.go
	data              dataCounters

	mu        sync.Mutex
	closed    bool
	routers   map[string]*router
	connRooms map[string]map[string]struct{}
}

// ErrNoAnnouncedIP is returned by New when the machine has no IPv4 address
// to put in ICE candidates: no Config.AnnouncedIP, a 0.0.0.0 listen IP and
// no non-loopback IPv4 interface, and Config.IncludeLoopback off. Callers
// may then run without calls (see Disabled).
var ErrNoAnnouncedIP = errors.New("media: no IPv4 address to announce in ICE candidates (set Config.AnnouncedIP, or Config.IncludeLoopback for local use)")

// Disabled returns an SFU that has no sockets and serves no call: StartCall
// and every media:* request PROTOCOL.md section 6 names answer an error of
// code protocol.CodeUnsupported whose message is "calls are disabled on
// this server: " + reason; the other methods see no call (CallActive false,
// EndCall false, Participants not_found). Close and Collector work.
func Disabled(reason string, log *slog.Logger) *SFU {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if reason == "" {
		reason = "no media configuration"
	}
	return &SFU{
		disabled: reason, log: log.With("component", "media"),
		routers: map[string]*router{}, connRooms: map[string]map[string]struct{}{},
		caps: mustJSON(RouterCapabilities()),
	}
}

// CallsDisabled returns the reason calls are disabled ("" when enabled).
func (s *SFU) CallsDisabled() string { return s.disabled }

func (s *SFU) disabledError() error {
	return protocol.Errorf(protocol.CodeUnsupported, "calls are disabled on this server: %s", s.disabled)
}

// New starts the SFU: workers, the shared UDP socket when configured, and
// the embedded TURN server when enabled.
func New(cfg Config, sender Sender, events Events, log *slog.Logger) (*SFU, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "media")
	s := &SFU{
		cfg: c, sender: sender, notify: notifier{sender: sender}, events: events, log: log,
		lf:        &pionLogFactory{log: log, panics: c.Panics},
		ports:     &portAllocator{min: c.RTCMinPort, max: c.RTCMaxPort},
		routers:   map[string]*router{},
		connRooms: map[string]map[string]struct{}{},
		caps:      mustJSON(RouterCapabilities()),
	}
	lip := net.ParseIP(c.ListenIP)
	s.listenLoopback = lip.IsLoopback()
	s.candidateIPs = localIPs(c.ListenIP, c.AnnouncedIP, c.IncludeLoopback, c.interfaceAddrs)
	if len(s.candidateIPs) == 0 {
		return nil, ErrNoAnnouncedIP
	}
	if s.cert, err = newCertificate(); err != nil {
		return nil, fmt.Errorf("media: certificate: %w", err)
	}
	if c.UDPMuxPort > 0 {
		ep, err := openEndpoint(c.ListenIP, c.UDPMuxPort, s.lf)
		if err != nil {
			return nil, fmt.Errorf("media: UDP mux port: %w", err)
		}
		ep.shared = true
		s.sharedEP = ep
	}
	if c.TCPPort > 0 {
		ep, err := openTCPEndpoint(c.ListenIP, c.TCPPort, s.lf)
		if err != nil {
			if s.sharedEP != nil {
				_ = s.sharedEP.close()
			}
			return nil, fmt.Errorf("media: TCP port: %w", err)
		}
		s.tcpEP = ep
	}
	if err := s.startTURN(); err != nil {
		if s.sharedEP != nil {
			_ = s.sharedEP.close()
		}
		if s.tcpEP != nil {
			_ = s.tcpEP.close()
		}
		return nil, err
	}
	for i := 0; i < c.Workers; i++ {
		w := newWorker(i)
		w.sfu = s
		s.workers = append(s.workers, w)
		go w.loop()
	}
	return s, nil
}

// Close ends every call without notifying anyone, stops the workers, the
// TURN server and closes every socket. No goroutine of the SFU survives it.
func (s *SFU) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	routers := s.routers
	s.routers = map[string]*router{}
	s.connRooms = map[string]map[string]struct{}{}
	s.mu.Unlock()
	for _, r := range routers {
		for _, t := range r.shutdown() {
			t.close()
		}
		r.worker.remove(r)
	}
	for _, w := range s.workers {
		w.stop()
	}
	var err error
	if s.turnServer != nil {
		err = s.turnServer.Close()
	}
	if s.sharedEP != nil {
		_ = s.sharedEP.close()
	}
	if s.tcpEP != nil {
		_ = s.tcpEP.close()
	}
	return err
}

// Capabilities returns the router RtpCapabilities (the same for every call).
func (s *SFU) Capabilities() json.RawMessage { return s.caps }

// StartCall starts the room's call if none is running. It is idempotent;
// Events.CallStarted fires only when the call is newly started.
func (s *SFU) StartCall(roomID, userID string) (json.RawMessage, bool, error) {
	if !protocol.ValidRoomID(roomID) {
		return nil, false, protocol.Errorf(protocol.CodeBadRequest, "invalid room_id")
	}
	if s.disabled != "" {
		return nil, false, s.disabledError()
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, false, protocol.Errorf(protocol.CodeInternal, "media server is shut down")
	}
	if _, ok := s.routers[roomID]; ok {
		s.mu.Unlock()
		return s.caps, false, nil
	}
	w := s.workers[int(s.nextWorker.Add(1)-1)%len(s.workers)]
	r := newRouter(s, roomID, w)
	s.routers[roomID] = r
	w.add(r)
	s.mu.Unlock()
	s.log.Info("call started", "room", roomID, "by", userID, "worker", w.id)
	if s.events != nil {
		s.events.CallStarted(roomID, userID)
	}
	return s.caps, true, nil
}

// CallActive reports whether the room has a call.
func (s *SFU) CallActive(roomID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.routers[roomID]
	return ok
}

// EndCall ends the room's call: every participant connection gets
// media:room_closed before anything is torn down, then Events.CallEnded.
func (s *SFU) EndCall(roomID string) bool {
	return s.endCall(roomID, nil)
}

// endCall is EndCall when cond (nil: always) holds for the router, checked
// under the SFU's and the router's locks.
func (s *SFU) endCall(roomID string, cond func(r *router) bool) bool {
	r := func() *router {
		s.mu.Lock()
		defer s.mu.Unlock()
		r := s.routers[roomID]
		if r == nil {
			return nil
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if cond != nil && !cond(r) {
			return nil
		}
		delete(s.routers, roomID)
		for connID := range r.participants {
			s.dropConnRoomLocked(connID, roomID)
		}
		return r
	}()
	if r == nil {
		return false
	}
	var left []*participant
	func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		left = r.sortedParticipants()
		for _, p := range left {
			s.notify.roomClosed(p.connID, roomID)
		}
	}()
	for _, t := range r.shutdown() {
		t.close()
	}
	r.worker.remove(r)
	s.log.Info("call ended", "room", roomID)
	for _, p := range left {
		s.participantLeft(roomID, p.connID, p.userID)
	}
	if s.events != nil {
		s.events.CallEnded(roomID)
	}
	return true
}

// JoinCall makes the connection a participant without transports (REST
// bookkeeping); media:join does the same and creates its transports.
func (s *SFU) JoinCall(roomID, connID, userID string) error {
	r, err := s.routerFor(roomID)
	if err != nil {
		return err
	}
	s.addConnRoom(connID, roomID)
	n, added, err := func() (int, bool, error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.closed {
			return 0, false, notFoundCall(roomID)
		}
		if _, ok := r.participants[connID]; ok {
			return 0, false, nil
		}
		r.addParticipant(connID, userID)
		return len(r.participants), true, nil
	}()
	if err != nil || !added {
		return err
	}
	s.participantJoined(roomID, connID, userID)
	s.callUpdated(roomID, n)
	return nil
}

// LeaveCall has the effect of media:leave from that connection.
func (s *SFU) LeaveCall(roomID, connID string) {
	_ = s.leave(roomID, connID, "")
}

// LeaveUser makes every connection of the user leave the call and returns
// the ids of those that left.
func (s *SFU) LeaveUser(roomID, userID string) []string {
	r, err := s.routerFor(roomID)
	if err != nil {
		return nil
	}
	r.mu.Lock()
	var conns []string
	for _, p := range r.sortedParticipants() {
		if p.userID == userID {
			conns = append(conns, p.connID)
		}
	}
	r.mu.Unlock()
	left := conns[:0]
	for _, c := range conns {
		if s.leave(roomID, c, "") == nil {
			left = append(left, c)
		}
	}
	return left
}

// Disconnect makes a closed connection leave every call it is in.
func (s *SFU) Disconnect(connID string) {
	s.mu.Lock()
	rooms := make([]string, 0, len(s.connRooms[connID]))
	for room := range s.connRooms[connID] {
		rooms = append(rooms, room)
	}
	s.mu.Unlock()
	sort.Strings(rooms)
	for _, room := range rooms {
		_ = s.leave(room, connID, "")
	}
}

// Participants lists the call's participants in join order.
func (s *SFU) Participants(roomID string) ([]Participant, error) {
	r, err := s.routerFor(roomID)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	out := []Participant{}
	for _, p := range r.sortedParticipants() {
		pi := Participant{ConnectionID: p.connID, UserID: p.userID, Producers: []ProducerInfo{}}
		for _, pr := range sortedProducers(p.producers) {
			pi.Producers = append(pi.Producers, pr.info())
		}
		out = append(out, pi)
	}
	return out, nil
}

// Stats are counters for tests and metrics.
type Stats struct {
	Calls, Participants, Transports, Producers, Consumers int
	RTPIn, RTPOut                                         uint64 // packets read / written by live transports
	// By kind: index 0 audio, 1 video.
	ProducersByKind, ConsumersByKind [2]int
	// Forwarded to consumers since New (RTX excluded), by kind.
	ForwardedPackets, ForwardedBytes [2]uint64
	TransportFailures                uint64
	// Transports by connection state (connStateNames order: new,
	// connecting, connected, disconnected, failed, closed).
	TransportsByState                [numConnStates]int
	PausedProducers, PausedConsumers int
	// Data channels: open data producers and consumers; messages and
	// bytes relayed to data consumers, messages dropped for a full send
	// buffer, data producers closed for an oversized message (since New).
	DataProducers, DataConsumers                       int
	DataMessages, DataBytes, DataDropped, DataTooLarge uint64
}

// Stats returns a snapshot of the SFU's counters.
func (s *SFU) Stats() Stats {
	s.mu.Lock()
	routers := make([]*router, 0, len(s.routers))
	for _, r := range s.routers {
		routers = append(routers, r)
	}
	s.mu.Unlock()
	st := Stats{Calls: len(routers), TransportFailures: s.transportFailures.Load(),
		DataMessages: s.data.messages.Load(), DataBytes: s.data.bytes.Load(),
		DataDropped: s.data.dropped.Load(), DataTooLarge: s.data.tooLarge.Load()}
	for i := range s.fwd {
		st.ForwardedPackets[i] = s.fwd[i].packets.Load()
		st.ForwardedBytes[i] = s.fwd[i].bytes.Load()
	}
	for _, r := range routers {
		r.mu.Lock()
		st.Participants += len(r.participants)
		st.Transports += len(r.transports)
		st.Producers += len(r.producers)
		st.DataProducers += len(r.dataProducers)
		for _, pr := range r.producers {
			st.ProducersByKind[kindIndex(pr.kind)]++
		}
		for _, pr := range r.producers {
			if pr.state() == streamPaused {
				st.PausedProducers++
			}
		}
		for _, p := range r.participants {
			st.Consumers += len(p.consumers)
			st.DataConsumers += len(p.dataConsumers)
			for _, c := range p.consumers {
				st.ConsumersByKind[kindIndex(c.p.kind)]++
				if c.state() == streamPaused {
					st.PausedConsumers++
				}
			}
		}
		for _, t := range r.transports {
			st.RTPIn += t.rtpIn.Load()
			st.RTPOut += t.rtpOut.Load()
			cs, _, _, _ := t.st.snapshot()
			st.TransportsByState[cs]++
		}
		r.mu.Unlock()
	}
	return st
}

// ---- internals ----

func newID() string { return uuid.NewString() }

func notFoundCall(roomID string) error {
	return protocol.Errorf(protocol.CodeNotFound, "no call in room %s", roomID)
}

func (s *SFU) routerFor(roomID string) (*router, error) {
	if !protocol.ValidRoomID(roomID) {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "invalid room_id")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.routers[roomID]
	if r == nil {
		return nil, notFoundCall(roomID)
	}
	return r, nil
}

func (s *SFU) addConnRoom(connID, roomID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.connRooms[connID]
	if m == nil {
		m = map[string]struct{}{}
		s.connRooms[connID] = m
	}
	m[roomID] = struct{}{}
}

func (s *SFU) dropConnRoomLocked(connID, roomID string) {
	if m := s.connRooms[connID]; m != nil {
		delete(m, roomID)
		if len(m) == 0 {
			delete(s.connRooms, connID)
		}
	}
}

func (s *SFU) callUpdated(roomID string, n int) {
	if s.events != nil {
		s.events.CallUpdated(roomID, n)
	}
}

// leave removes a connection from a call: others get media:peer_left,
// members get CallUpdated. reqID, when set, gets an ack.
func (s *SFU) leave(roomID, connID, reqID string) error {
	r, err := s.routerFor(roomID)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.dropConnRoomLocked(connID, roomID)
	s.mu.Unlock()
	p, ts, n := func() (*participant, []*transport, int) {
		r.mu.Lock()
		defer r.mu.Unlock()
		p, ts := r.removeParticipant(connID)
		if p != nil {
			s.notify.ack(connID, reqID)
			s.notify.peerLeftLocked(r, p)
		}
		return p, ts, len(r.participants)
	}()
	if p == nil {
		return protocol.Errorf(protocol.CodeNotFound, "connection is not in the call of room %s", roomID)
	}
	closeTransports(ts)
	s.participantLeft(roomID, connID, p.userID)
	s.callUpdated(roomID, n)
	return nil
}

// transportFailed makes the participant that owns t leave the call, as on a
// closed connection (the others get media:peer_left), when t is still one
// of its transports. It runs after a panic was contained in one of t's
// goroutines; it must not run on those goroutines (close waits for them).
func (s *SFU) transportFailed(t *transport) {
	s.transportFailures.Add(1)
	r, err := s.routerFor(t.roomID)
	if err != nil {
		t.close()
		return
	}
	r.mu.Lock()
	p := r.participants[t.owner.connID]
	current := p != nil && (p.send == t || p.recv == t)
	r.mu.Unlock()
	if current {
		_ = s.leave(t.roomID, t.owner.connID, "")
	}
	t.close() // no-op when leave closed it
}

// ---- workers ----

// worker drives the periodic media work (transport-wide-cc feedback every
// tick; layer rates, bandwidth estimates and layer allocation every
// allocPeriod) of the routers assigned to it round-robin. Packets are forwarded on each
// transport's read goroutine; control runs on the caller's goroutine under
// the router's lock.
type worker struct {
	id      int
	sfu     *SFU
	ctl     workerControl // control's schedule (worker goroutine only)
	mu      sync.Mutex
	routers map[*router]struct{}
	quit    chan struct{}
	done    chan struct{}
}

func newWorker(id int) *worker {
	return &worker{id: id, routers: map[*router]struct{}{}, quit: make(chan struct{}), done: make(chan struct{})}
}

func (w *worker) add(r *router) {
	w.mu.Lock()
	w.routers[r] = struct{}{}
	w.mu.Unlock()
}

func (w *worker) remove(r *router) {
	w.mu.Lock()
	delete(w.routers, r)
	w.mu.Unlock()
}

func (w *worker) stop() {
	close(w.quit)
	<-w.done
}

const workerTick = 50 * time.Millisecond

func (w *worker) loop() {
	defer close(w.done)
	tk := time.NewTicker(workerTick)
	defer tk.Stop()
	var ts, recvs []*transport
	var prods []*producer
	var lastAlloc int64
	for {
		select {
		case <-w.quit:
			return
		case <-tk.C:
		}
		now := monoNow()
		alloc := now-lastAlloc >= allocPeriod
		if alloc {
			lastAlloc = now
		}
		ts, recvs, prods = ts[:0], recvs[:0], prods[:0]
		w.mu.Lock()
		for r := range w.routers {
			r.mu.Lock()
			for _, t := range r.transports {
				if t.dir == dirSend {
					ts = append(ts, t)
				} else if alloc {
					recvs = append(recvs, t)
				}
			}
			if alloc {
				for _, p := range r.producers {
					if p.kind == kindVideo {
						prods = append(prods, p)
					}
				}
			}
			r.mu.Unlock()
		}
		w.mu.Unlock()
		for _, t := range ts {
			w.flush(t)
		}
		// Layer allocation: the producers' layer rates first, then each
		// receiver's estimate and its consumers' layers (bwe.go).
		for _, p := range prods {
			w.measure(p, now)
		}
		for _, t := range recvs {
			w.allocate(t, now)
		}
		w.control(time.Now())
	}
}

// measure and allocate contain panics like flush: the transport concerned
// fails, the worker goes on.
func (w *worker) measure(p *producer, now int64) {
	defer p.t.recovered(safe.MediaPacket)
	p.measureRates(now)
}

func (w *worker) allocate(t *transport, now int64) {
	defer t.recovered(safe.MediaPacket)
	t.allocate(now, true)
}

// flush sends one transport's transport-wide-cc feedback; a panic there
// fails only that transport (counted as safe.MediaPacket) and the worker
// keeps serving its other routers.
func (w *worker) flush(t *transport) {
	defer t.recovered(safe.MediaPacket)
	t.flushTWCC()
}

// ---- pion logging → slog (pion's warnings are expected noise: debug) ----

// pionLogFactory also carries the SFU's panic counter to the sockets'
// ufrag sniffers, which are built where only the logger factory is passed.
type pionLogFactory struct {
	log    *slog.Logger
	panics safe.Counter
}

func (f *pionLogFactory) NewLogger(scope string) logging.LeveledLogger {
	return &pionLogger{log: f.log.With("pion", scope)}
}

type pionLogger struct{ log *slog.Logger }

func (l *pionLogger) Trace(string)          {}
func (l *pionLogger) Tracef(string, ...any) {}
func (l *pionLogger) Debug(string)          {}
func (l *pionLogger) Debugf(string, ...any) {}
func (l *pionLogger) Info(string)           {}
func (l *pionLogger) Infof(string, ...any)  {}
func (l *pionLogger) Warn(m string)         { l.log.Debug(m) }
func (l *pionLogger) Warnf(f string, a ...any) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.log.Debug(fmt.Sprintf(f, a...))
	}
}
func (l *pionLogger) Error(m string)            { l.log.Warn(m) }
func (l *pionLogger) Errorf(f string, a ...any) { l.log.Warn(fmt.Sprintf(f, a...)) }
