package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/parleyhq/parley/internal/hub"
	"github.com/parleyhq/parley/internal/rooms"
	"github.com/parleyhq/parley/internal/safe"
)

// Defaults of Options.
const (
	DefaultHeartbeat = 2 * time.Second
	DefaultDeadAfter = 10 * time.Second
)

// InboxSize is the capacity, in messages, of a node's one inbox: the
// channel that every NATS subscription of the ordered stream (node, room,
// user and all subjects) delivers into, in the order the connection read
// them. A message that finds it full is dropped by the NATS client (a
// slow consumer): the node logs and counts it and calls
// ClusterHandler.Resync.
const InboxSize = 1 << 16

// joinTimeout bounds Join when its context has no deadline.
const joinTimeout = 30 * time.Second

// flushTimeout bounds the round trip that makes the NATS server confirm a
// new subscription (SubscribeRoom, a user's first connection).
const flushTimeout = 2 * time.Second

// Metrics counts a node's NATS connection events. *metrics.Metrics
// implements it; nil is allowed.
type Metrics interface {
	// NATSDisconnect counts a lost NATS connection
	// (parley_nats_disconnects_total).
	NATSDisconnect()
	// NATSReconnect counts a re-established one
	// (parley_nats_reconnects_total).
	NATSReconnect()
	// NATSSlowConsumer counts an overflow of the node's inbox, which
	// dropped messages (parley_nats_slow_consumer_total).
	NATSSlowConsumer()
}

// Options configure Join.
type Options struct {
	// URL is the NATS server URL, or several separated by commas.
	URL string
	// ClusterName prefixes every subject and KV bucket of the cluster:
	// 1–32 of [A-Za-z0-9_-]; "" is DefaultClusterName.
	ClusterName string
	// NodeID is this node's id, 1–64 of [A-Za-z0-9_-]; "" picks a random
	// UUID.
	NodeID string
	// Heartbeat is the period of the node's registry heartbeat (a KV
	// update of its key); 0 is DefaultHeartbeat.
	Heartbeat time.Duration
	// DeadAfter is how long a node may stay silent in the registry before
	// the others declare it dead; it must exceed 2×Heartbeat. 0 is
	// DefaultDeadAfter.
	DeadAfter time.Duration
	// Hub holds this node's connections, the targets of the Broker side.
	// nil: the node delivers no Broker traffic (ToUsers and ToAll only
	// publish).
	Hub *hub.Hub
	// Rooms, when not nil, is installed as the room handler before any
	// message is delivered (the same as calling SetHandler after Join).
	// Its methods run on the goroutine that also delivers Broker traffic
	// to the hub: they must not block (no network or store round trips).
	Rooms rooms.ClusterHandler
	// Panics counts panics contained per delivered message (may be nil).
	Panics safe.Counter
	// Metrics counts connection events (may be nil).
	Metrics Metrics
	// Log receives connection events and errors (nil: slog.Default()).
	Log *slog.Logger
}

// Node is this server's membership in a cluster over NATS: the registry
// (heartbeat, dead detection, drain), room leases, node and room
// messaging (it implements rooms.Cluster) and user deliveries (it
// implements Broker). Create it with Join; Close it once.
type Node struct {
	id       string
	instance string // random per process: tells this node's registry entries and pings from a namesake's
	subj     subjects
	opts     Options
	log      *slog.Logger
	hub      *hub.Hub
	metrics  Metrics
	panics   safe.Counter

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	stop   chan struct{}
	wg     sync.WaitGroup
	closed atomic.Bool
	once   sync.Once

	nc      *nats.Conn
	js      jetstream.JetStream
	nodesKV jetstream.KeyValue
	roomsKV jetstream.KeyValue
	pingSub *nats.Subscription
	allSub  *nats.Subscription

	// The ordered stream: every chan subscription feeds inbox; one
	// goroutine (dispatchLoop) drains it and the control queue.
	inbox         chan *nats.Msg
	wake          chan struct{}
	ctlMu         sync.Mutex
	ctl           []string // node ids for NodeDown, in order
	ctlResync     bool
	ctlPending    atomic.Bool
	handler       atomic.Pointer[handlerBox]
	handlerMu     sync.Mutex                     // serialises SetHandler
	downHooks     atomic.Pointer[[]func(string)] // OnNodeDown (status.go)
	nodeSub       *nats.Subscription
	nodeRoomsSubj string // <cluster>.node.<id>.rooms

	roomsMu  sync.Mutex
	roomSubs map[string]*nats.Subscription
	roomOf   map[*nats.Subscription]string

	usersMu  sync.Mutex
	userSubs map[string]*nats.Subscription

	reg registry

	api atomic.Pointer[apiState] // StartAPI (api.go)

	calls atomic.Pointer[callsState] // StartCalls (calls.go)

	skipBeats atomic.Bool  // tests: heartbeat writes fail
	recvUser  atomic.Int64 // messages received on user subjects (tests)
	recvRoom  atomic.Int64 // messages received on room subjects (tests)
}

type handlerBox struct{ h rooms.ClusterHandler }

var (
	_ rooms.Cluster = (*Node)(nil)
	_ Broker        = (*Node)(nil)
)

// Join connects to NATS and makes this process a node of the cluster
// o.ClusterName: it creates the KV buckets <cluster>_nodes and
// <cluster>_rooms when missing (History 1), registers the node in
// <cluster>_nodes, answers pings on <cluster>.node.<id>.ping, watches the
// registry, starts heartbeating, and subscribes to <cluster>.all and to the
// user subjects of the users connected to o.Hub.
//
// It takes at most until ctx's deadline, or 30 s when ctx has none.
// Errors: an invalid option; NATS unreachable or without JetStream; a node
// with the same id that answers its ping (it is alive in this cluster). A
// registered node with the same id that does not answer (no responders,
// or no reply within 1 s) crashed: its key is taken over at once.
func Join(ctx context.Context, o Options) (*Node, error) {
	if o.ClusterName == "" {
		o.ClusterName = DefaultClusterName
	}
	if !ValidClusterName(o.ClusterName) {
		return nil, fmt.Errorf("cluster: invalid cluster name %q: want 1-32 characters of [A-Za-z0-9_-]", o.ClusterName)
	}
	if o.NodeID == "" {
		o.NodeID = uuid.NewString()
	}
	if err := checkNodeID(o.NodeID); err != nil {
		return nil, err
	}
	if o.Heartbeat == 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	if o.DeadAfter == 0 {
		o.DeadAfter = DefaultDeadAfter
	}
	if o.Heartbeat < 0 || o.DeadAfter <= 2*o.Heartbeat {
		return nil, fmt.Errorf("cluster: dead-after (%s) must exceed twice the heartbeat (%s)", o.DeadAfter, o.Heartbeat)
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	var nonce [8]byte
	_, _ = rand.Read(nonce[:])
	n := &Node{
		id: o.NodeID, instance: hex.EncodeToString(nonce[:]), subj: newSubjects(o.ClusterName), opts: o,
		log: o.Log.With("cluster", o.ClusterName, "node", o.NodeID), hub: o.Hub, metrics: o.Metrics, panics: o.Panics,
		stop: make(chan struct{}), inbox: make(chan *nats.Msg, InboxSize), wake: make(chan struct{}, 1),
		roomSubs: map[string]*nats.Subscription{}, roomOf: map[*nats.Subscription]string{},
		userSubs: map[string]*nats.Subscription{},
	}
	n.nodeRoomsSubj = n.subj.nodeRooms(n.id)
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.reg.init()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, joinTimeout)
		defer cancel()
	}
	ok := false
	defer func() {
		if !ok {
			n.closed.Store(true) // the hub hook, if installed, does nothing more
			if n.nc != nil {
				lctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_ = n.Leave(lctx) // registered already? then not anymore
				cancel()
				n.nc.Close()
			}
			n.cancel()
		}
	}()

	nc, err := nats.Connect(o.URL,
		nats.Name("parley "+o.ClusterName+" "+o.NodeID),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.PingInterval(10*time.Second),
		nats.DisconnectErrHandler(n.onDisconnect),
		nats.ReconnectHandler(n.onReconnect),
		nats.ClosedHandler(func(*nats.Conn) { n.log.Info("NATS connection closed") }),
		nats.ErrorHandler(n.onAsyncError),
	)
	if err != nil {
		return nil, fmt.Errorf("cluster: connect to NATS %s: %w", o.URL, err)
	}
	n.nc = nc
	if n.js, err = jetstream.New(nc); err != nil {
		return nil, fmt.Errorf("cluster: JetStream: %w", err)
	}
	if err := n.openBuckets(ctx); err != nil {
		return nil, err
	}
	if err := n.register(ctx); err != nil {
		return nil, err
	}
	w, err := n.watchRegistry(ctx)
	if err != nil {
		return nil, err
	}
	if o.Hub != nil {
		if n.allSub, err = nc.ChanSubscribe(n.subj.all, n.inbox); err != nil {
			w.stop()
			return nil, fmt.Errorf("cluster: subscribe %s: %w", n.subj.all, err)
		}
		o.Hub.OnUser(n.syncUser)
		for _, u := range o.Hub.ConnectedUsers() {
			n.syncUser(u, true)
		}
	}
	if o.Rooms != nil {
		if err := n.installHandler(o.Rooms); err != nil {
			w.stop()
			return nil, err
		}
	}
	if err := nc.FlushWithContext(ctx); err != nil {
		w.stop()
		return nil, fmt.Errorf("cluster: flush NATS subscriptions: %w", err)
	}
	ok = true
	n.wg.Add(3)
	go n.dispatchLoop()
	go n.registryLoop(w)
	go n.heartbeatLoop()
	n.log.Info("joined the cluster", "nats", nc.ConnectedUrlRedacted(), "heartbeat", o.Heartbeat, "dead_after", o.DeadAfter)
	return n, nil
}

// openBuckets binds the KV buckets <cluster>_nodes and <cluster>_rooms,
// creating them when missing. The registry bucket has a TTL (stream
// MaxAge) of an hour, far above any heartbeat, so that the delete markers
// of departed nodes and the keys of a cluster that stopped altogether do
// not pile up; the lease bucket has none (a lease lives as long as its
// room is owned).
func (n *Node) openBuckets(ctx context.Context) error {
	var err error
	if n.nodesKV, err = n.bucket(ctx, jetstream.KeyValueConfig{Bucket: n.subj.nodesBucket, History: 1, TTL: time.Hour,
		Description: "Parley cluster " + n.subj.cluster + ": node registry"}); err != nil {
		return err
	}
	n.roomsKV, err = n.bucket(ctx, jetstream.KeyValueConfig{Bucket: n.subj.roomsBucket, History: 1,
		Description: "Parley cluster " + n.subj.cluster + ": room leases"})
	return err
}

func (n *Node) bucket(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := n.js.KeyValue(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = n.js.CreateKeyValue(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) { // another node created it first
			kv, err = n.js.KeyValue(ctx, cfg.Bucket)
		}
	}
	if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) {
		return nil, fmt.Errorf("cluster: KV bucket %s: %w (is JetStream enabled on the NATS server? run nats-server -js)", cfg.Bucket, err)
	}
	if err != nil {
		return nil, fmt.Errorf("cluster: KV bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

// NodeID is this node's id.
func (n *Node) NodeID() string { return n.id }

// ClusterName is the cluster's name (the prefix of its subjects and
// buckets).
func (n *Node) ClusterName() string { return n.subj.cluster }

// Healthy returns nil while the NATS connection is CONNECTED and the node
// holds its registry key; otherwise an error saying why (for /healthz).
func (n *Node) Healthy() error {
	if err := n.reg.displacedErr(); err != nil {
		return err
	}
	if st := n.nc.Status(); st != nats.CONNECTED {
		return fmt.Errorf("cluster: NATS connection is %s", st)
	}
	return nil
}

// Close leaves the cluster (Leave, bounded to 2 s), stops the node's
// goroutines and closes the NATS connection. It is safe to call more than
// once; it always returns nil (Broker's signature).
func (n *Node) Close() error {
	n.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := n.Leave(ctx); err != nil {
			n.log.Warn("leaving the cluster", "err", err)
		}
		cancel()
		n.usersMu.Lock()
		n.closed.Store(true)
		n.usersMu.Unlock()
		n.cancel()
		close(n.stop)
		n.wg.Wait()
		n.nc.Close()
	})
	return nil
}

func (n *Node) onDisconnect(_ *nats.Conn, err error) {
	if n.closed.Load() {
		return
	}
	n.log.Warn("NATS connection lost; reconnecting", "err", err)
	if n.metrics != nil {
		n.metrics.NATSDisconnect()
	}
	n.reg.blind()
}

func (n *Node) onReconnect(nc *nats.Conn) {
	n.log.Info("NATS connection re-established; resyncing rooms", "nats", nc.ConnectedUrlRedacted())
	if n.metrics != nil {
		n.metrics.NATSReconnect()
	}
	n.reg.requestRewatch()
	n.enqueueResync()
}

func (n *Node) onAsyncError(_ *nats.Conn, sub *nats.Subscription, err error) {
	if errors.Is(err, nats.ErrSlowConsumer) && sub != nil && sub.Type() == nats.ChanSubscription {
		dropped, _ := sub.Dropped()
		n.log.Error("node inbox full: NATS messages dropped (slow consumer); resyncing rooms",
			"subject", sub.Subject, "dropped_total", dropped, "inbox", InboxSize)
		if n.metrics != nil {
			n.metrics.NATSSlowConsumer()
		}
		n.enqueueResync()
		return
	}
	subject := ""
	if sub != nil {
		subject = sub.Subject
	}
	n.log.Warn("NATS asynchronous error", "subject", subject, "err", err)
}

// SetHandler implements rooms.Cluster: it installs h and subscribes to
// <cluster>.node.<id>.rooms; messages on it are delivered from then on.
// Only the first call counts (Options.Rooms is a first call). h's methods
// must not block (see Options.Rooms).
func (n *Node) SetHandler(h rooms.ClusterHandler) {
	if err := n.installHandler(h); err != nil {
		n.log.Error("installing the room handler", "err", err)
	}
}

func (n *Node) installHandler(h rooms.ClusterHandler) error {
	n.handlerMu.Lock()
	defer n.handlerMu.Unlock()
	if n.handler.Load() != nil || h == nil {
		return nil
	}
	n.handler.Store(&handlerBox{h})
	sub, err := n.nc.ChanSubscribe(n.subj.nodeRooms(n.id), n.inbox)
	if err != nil {
		return fmt.Errorf("cluster: subscribe %s: %w", n.subj.nodeRooms(n.id), err)
	}
	n.nodeSub = sub
	if n.nc.IsConnected() {
		if err := n.nc.FlushTimeout(flushTimeout); err != nil {
			n.log.Warn("NATS flush after subscribing the node subject", "err", err)
		}
	}
	return nil
}

func (n *Node) roomHandler() rooms.ClusterHandler {
	if b := n.handler.Load(); b != nil {
		return b.h
	}
	return nil
}

// enqueueNodeDown schedules handler.NodeDown(node) on the dispatch
// goroutine.
func (n *Node) enqueueNodeDown(node string) {
	n.ctlMu.Lock()
	n.ctl = append(n.ctl, node)
	n.ctlMu.Unlock()
	n.poke()
	n.callsNodeDown(node)
}

// enqueueResync schedules one handler.Resync on the dispatch goroutine
// (requests made before it runs are one Resync).
func (n *Node) enqueueResync() {
	n.ctlMu.Lock()
	n.ctlResync = true
	n.ctlMu.Unlock()
	n.poke()
}

func (n *Node) poke() {
	n.ctlPending.Store(true)
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// dispatchLoop is the one goroutine that calls the room handler and
// delivers Broker messages: messages in the order the NATS connection read
// them, and after each, the pending control events (NodeDown, Resync).
func (n *Node) dispatchLoop() {
	defer n.wg.Done()
	for {
		select {
		case m := <-n.inbox:
			n.dispatch(m)
		case <-n.wake:
		case <-n.stop:
			return
		}
		if n.ctlPending.Load() {
			n.runControl()
		}
	}
}

func (n *Node) runControl() {
	n.ctlPending.Store(false)
	n.ctlMu.Lock()
	downs, resync := n.ctl, n.ctlResync
	n.ctl, n.ctlResync = nil, false
	n.ctlMu.Unlock()
	if hooks := n.downHooks.Load(); hooks != nil {
		for _, node := range downs {
			for _, fn := range *hooks {
				n.callHandler(func() { fn(node) })
			}
		}
	}
	h := n.roomHandler()
	if h == nil {
		return
	}
	for _, node := range downs {
		n.callHandler(func() { h.NodeDown(node) })
	}
	if resync {
		n.callHandler(h.Resync)
	}
}

func (n *Node) callHandler(fn func()) {
	defer safe.Recover(n.log, n.panics, safe.Broker, nil)
	fn()
}

// dispatch hands one message to its receiver; a panic is contained to it.
func (n *Node) dispatch(m *nats.Msg) {
	defer safe.Recover(n.log, n.panics, safe.Broker, nil)
	subj := m.Subject
	switch {
	case strings.HasPrefix(subj, n.subj.userPrefix):
		n.recvUser.Add(1)
		n.receiveDelivery(m.Data, kindUsers)
	case subj == n.subj.all:
		n.receiveDelivery(m.Data, kindAll)
	case strings.HasPrefix(subj, n.subj.roomPrefix):
		n.recvRoom.Add(1)
		n.roomsMu.Lock()
		roomID, ok := n.roomOf[m.Sub] // not a room unsubscribed meanwhile
		n.roomsMu.Unlock()
		if h := n.roomHandler(); ok && h != nil {
			h.RoomMessage(roomID, m.Data)
		}
	case subj == n.nodeRoomsSubj:
		if h := n.roomHandler(); h != nil {
			h.NodeMessage(m.Data)
		}
	}
}
