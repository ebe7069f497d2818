// Package chat is Parley's chat layer (PROTOCOL.md section 5) on top of
// rooms created through REST: messages (written over REST, pushed live),
// typing indicators (typing:start / typing:stop) and user status presence
// (presence:update), plus the hooks that make membership changes take
// effect on live connections at once.
//
// Every push goes through the cluster.Broker to users' connections; room
// membership is read from the store at send time, so a removed member stops
// receiving a room's messages and typing the moment the removal is stored.
//
// Typing indicators, presence grace periods and the trailing sends of
// coalesced user statuses expire through Timers: one min-heap and one
// goroutine each, not a timer per user.
//
// The Service is a gateway.Handler for the "typing" and "presence" prefixes
// and a gateway.Lifecycle; internal/server wires it (chat.go), and the REST
// handlers in internal/api call its methods.
package chat

import (
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"sync"
	"time"

	"github.com/parleyhq/parley/internal/access"
	"github.com/parleyhq/parley/internal/cluster"
	"github.com/parleyhq/parley/internal/gateway"
	"github.com/parleyhq/parley/internal/hub"
	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/safe"
	"github.com/parleyhq/parley/internal/store"
)

// RoomRefresher re-checks a user's live capabilities in a room after a
// membership change and ends those the access policy no longer grants:
// rooms.Manager (room clients leave with room:left) and the call wiring
// (the user's connections leave the call: media:peer_left to the others,
// consumers and transports closed).
type RoomRefresher interface {
	RefreshUser(ctx context.Context, roomID, userID string)
}

// Access is the access policy (access.Policy): nil when sub may take
// action a in roomID, else a *protocol.Error or a store failure.
type Access interface {
	Decide(ctx context.Context, sub access.Subject, roomID string, a access.Action) error
}

// Store is what the chat service keeps in the store: messages, users'
// chosen statuses, and the room records and membership it reads (message
// and typing audiences, shared-room presence, and the default access
// policy's access.Records). store.Store implements it.
type Store interface {
	store.Messages
	store.Statuses
	store.RoomReader
}

// Options configure the service (from config.Config).
type Options struct {
	Store  Store
	Broker cluster.Broker
	// Hub is read only to know whether a user is connected on this node
	// and who owns a connection id; deliveries go through Broker.
	Hub   *hub.Hub
	Rooms RoomRefresher // may be nil
	Calls RoomRefresher // may be nil
	// Access decides access.Chat (messages, typing); nil means the policy
	// over Store without dev mode.
	Access Access
	Log    *slog.Logger
	// Panics counts panics contained in the expiry goroutines (nil: only
	// logged).
	Panics safe.Counter

	TypingTimeout        time.Duration // typing expiry without renewal (6s)
	PresenceOfflineGrace time.Duration // delay before a disconnected user shows offline (5s)
	PresenceAudience     string        // "all" (every connected user) or "shared" (users who are members of a common REST room)
	// PresenceUpdateInterval coalesces what others see of one user's
	// status: at most one presence:update per user per interval, the
	// last value winning (0: every change at once).
	PresenceUpdateInterval time.Duration
	MessageMaxChars        int // longest message, in characters (runes)
	// CacheStatus keeps users' chosen statuses in memory (write-through),
	// saving a store read on every first connection. Only safe when this
	// node is the only writer of statuses (no cluster).
	CacheStatus bool
	// Cluster, when not nil, makes user status and typing cluster-wide
	// (cluster.go); nil is one node, everything in this process.
	Cluster Cluster
	// Events, when not nil, gets the chat's webhook events: message.created
	// on the node where the message was posted, user.online and
	// user.offline where the status transition happened (once in a
	// cluster: the compare-and-set that made it). Emit must not block.
	Events Events
}

// Events receives webhook events (internal/webhook's Sender).
type Events interface {
	Emit(event string, data any)
}

// Webhook event names of the chat layer (internal/webhook's constants).
const (
	EventMessageCreated = "message.created"
	EventUserOnline     = "user.online"
	EventUserOffline    = "user.offline"
)

// UserEvent is the data of user.online and user.offline: the user came
// online on the first connection anywhere, went offline after the grace
// that followed the last. The chosen status (invisible included) is not
// part of it.
type UserEvent struct {
	UserID string `json:"user_id"`
}

// emit hands an event to Options.Events when set.
func (s *Service) emit(event string, data any) {
	if s.opts.Events != nil {
		s.opts.Events.Emit(event, data)
	}
}

// Service is the chat layer of one node.
type Service struct {
	opts   Options
	st     Store
	broker cluster.Broker
	hub    *hub.Hub
	log    *slog.Logger

	seed    maphash.Seed
	typing  typingState
	pres    presenceState
	cl      clusterState
	status  statusCache
	stop    chan struct{}
	wg      sync.WaitGroup
	closeMu sync.Once
}

// opTimeout bounds store calls made outside a request (expiry, disconnect).
const opTimeout = 5 * time.Second

// New creates the service; Start runs its expiry goroutines.
func New(opts Options) *Service {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.PresenceAudience == "" {
		opts.PresenceAudience = AudienceAll
	}
	if opts.Access == nil {
		opts.Access = &access.Policy{Records: opts.Store}
	}
	if opts.MessageMaxChars <= 0 {
		opts.MessageMaxChars = 4000
	}
	s := &Service{
		opts: opts, st: opts.Store, broker: opts.Broker, hub: opts.Hub, log: opts.Log,
		seed: maphash.MakeSeed(), stop: make(chan struct{}),
	}
	s.typing.init()
	s.pres.init()
	s.cl.init()
	return s
}

// Start runs the typing, presence grace and presence coalescing goroutines
// until Close.
func (s *Service) Start() {
	if s.opts.Cluster != nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.typing.remote.Run(s.stop, contained(s.log, s.opts.Panics, s.remoteExpired))
		}()
		s.startCluster()
	}
	s.wg.Add(3)
	go func() {
		defer s.wg.Done()
		s.typing.timers.Run(s.stop, contained(s.log, s.opts.Panics, s.typingExpired))
	}()
	go func() {
		defer s.wg.Done()
		s.pres.grace.Run(s.stop, contained(s.log, s.opts.Panics, s.graceExpired))
	}()
	go func() {
		defer s.wg.Done()
		s.pres.flush.Run(s.stop, contained(s.log, s.opts.Panics, s.flushExpired))
	}()
}

// contained wraps an expiry callback so that a panic for one key (one
// user's typing or grace) is logged and counted, and the goroutine that
// serves every other key keeps running.
func contained[K comparable](log *slog.Logger, c safe.Counter, fire func(K)) func(K) {
	return func(k K) {
		defer safe.Recover(log, c, safe.Chat, nil)
		fire(k)
	}
}

// Close stops the expiry goroutines and waits for them. Pending typing
// indicators and grace periods are dropped.
func (s *Service) Close() {
	s.closeMu.Do(func() { close(s.stop) })
	s.wg.Wait()
}

// TypingActive is the number of (room, user) typing indicators now active.
func (s *Service) TypingActive() int { return s.typing.timers.Len() }

// Handle serves typing:* and presence:* messages.
func (s *Service) Handle(ctx context.Context, sess gateway.Session, env protocol.Envelope) error {
	var err error
	switch env.Type {
	case protocol.TypeTypingStart:
		err = s.handleTyping(ctx, sess, env, true)
	case protocol.TypeTypingStop:
		err = s.handleTyping(ctx, sess, env, false)
	case protocol.TypePresenceUpdate:
		err = s.handlePresence(ctx, sess, env)
	default:
		return protocol.Errorf(protocol.CodeBadRequest, "unknown message type %q", truncate(env.Type, 64))
	}
	if err != nil {
		return err
	}
	if env.ID != "" {
		sess.Reply(protocol.TypeAck, env.ID, nil)
	}
	return nil
}

// Connected implements gateway.Lifecycle: presence of the user.
func (s *Service) Connected(sess gateway.Session, first bool) {
	s.presenceConnected(sess)
}

// Disconnected implements gateway.Lifecycle: when the user's last
// connection on this node closed, their typing started through this node
// ends at once and their offline grace period starts (in a cluster: when
// they have no connection left on any node, decided at its end).
func (s *Service) Disconnected(sess gateway.Session, last bool) {
	if !last {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	s.endUserTyping(ctx, sess.UserID())
	s.presenceDisconnected(sess.UserID())
}

// MembershipChanged applies a membership change (already stored) to live
// state at once: the user's live room clients are re-checked (removed ones
// get room:left), their call connections are re-checked (removed ones
// leave the call), and, when removed, their typing in that room ends (the
// remaining members get typing:stop). Messages need nothing: their
// audience is read from the store at send time.
func (s *Service) MembershipChanged(ctx context.Context, roomID, userID string, removed bool) {
	if s.opts.Rooms != nil {
		s.opts.Rooms.RefreshUser(ctx, roomID, userID)
	}
	if s.opts.Calls != nil {
		s.opts.Calls.RefreshUser(ctx, roomID, userID)
	}
	if removed {
		s.endTyping(ctx, roomID, userID)
	}
}

// requireChat asks the policy for access.Chat: nil for members; the same
// forbidden answer for a room the subject may not see as for an unknown
// one (access.Invisible); forbidden or not_found for a visible room.
func (s *Service) requireChat(ctx context.Context, roomID string, who access.Subject) error {
	if err := s.opts.Access.Decide(ctx, who, roomID, access.Chat); err != nil {
		return s.internal(err, "access check")
	}
	return nil
}

// othersOf returns the members of the room other than userID.
func (s *Service) othersOf(ctx context.Context, roomID, userID string) ([]string, error) {
	members, err := s.st.Members(ctx, roomID)
	if err != nil {
		return nil, err
	}
	out := members[:0]
	for _, m := range members {
		if m != userID {
			out = append(out, m)
		}
	}
	return out, nil
}

// internal logs err and returns a client-safe internal error.
func (s *Service) internal(err error, what string) error {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		return pe
	}
	s.log.Error("chat: "+what, "err", err)
	return protocol.Errorf(protocol.CodeInternal, "%s failed", what)
}

// stripe picks one of n mutexes for a key.
func (s *Service) stripe(locks []sync.Mutex, parts ...string) *sync.Mutex {
	var h maphash.Hash
	h.SetSeed(s.seed)
	for _, p := range parts {
		h.WriteString(p)
		h.WriteByte(0)
	}
	return &locks[h.Sum64()%uint64(len(locks))]
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
