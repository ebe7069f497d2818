package chat

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/safe"
)

// Cluster is the replicated state behind user status and typing when the
// node is one of several (PROTOCOL.md §9, docs/cluster.md "User status and
// typing"). cluster.Status implements it over a JetStream KV bucket and
// core NATS; tests use an in-memory one. With Options.Cluster nil the
// service is a single node and keeps everything in this process.
//
// The bucket holds two kinds of entries:
//   - a connection entry per (user, node): the node has at least one
//     connection of the user (PutConn on the first, DeleteConn on the last);
//   - a status entry per user who is shown (online or within the grace):
//     an opaque value written by compare-and-set, so that exactly one node
//     makes each transition. No entry is offline.
//
// A CAS that loses reports ok=false with a nil error; err is for failures
// (NATS unreachable, timeouts).
type Cluster interface {
	// NodeID is this node's id.
	NodeID() string

	// PutConn records that this node holds a connection of user.
	PutConn(ctx context.Context, user string) error
	// DeleteConn forgets node's connection entry of user (any node: the
	// survivors remove a dead node's entries).
	DeleteConn(ctx context.Context, user, node string) error
	// HasConns reports whether user has a connection entry on any node,
	// read from the bucket (not a cache).
	HasConns(ctx context.Context, user string) (bool, error)
	// ConnUsers lists the users with a connection entry of node.
	ConnUsers(ctx context.Context, node string) ([]string, error)

	// GetStatus reads user's status entry: rev 0 when there is none.
	GetStatus(ctx context.Context, user string) (value []byte, rev uint64, err error)
	// CreateStatus writes user's status entry if there is none.
	CreateStatus(ctx context.Context, user string, value []byte) (rev uint64, ok bool, err error)
	// UpdateStatus replaces user's status entry if its revision is rev.
	UpdateStatus(ctx context.Context, user string, value []byte, rev uint64) (newRev uint64, ok bool, err error)
	// DeleteStatus removes user's status entry if its revision is rev.
	DeleteStatus(ctx context.Context, user string, rev uint64) (ok bool, err error)
	// WatchStatus calls fn, from one goroutine and in the bucket's order,
	// with every status entry (current ones first, then fn("", nil, 0)
	// once) and every later change until ctx ends (it returns then, or
	// with an error when the watch broke); value is nil for a deletion.
	WatchStatus(ctx context.Context, fn func(user string, value []byte, rev uint64)) error

	// PublishTyping sends a typing event to every other node.
	PublishTyping(msg []byte)
	// SubscribeTyping calls fn, from one goroutine, with the typing events
	// published by every node (this one included) until ctx ends; it
	// blocks until then.
	SubscribeTyping(ctx context.Context, fn func(msg []byte)) error
	// OnNodeDown calls fn when another node is declared dead or drains.
	// fn must not block.
	OnNodeDown(fn func(node string))
}

// Shown states of a status entry.
const (
	shownOnline = "online"
	shownGrace  = "grace"
)

// graceSlack is how long after a grace's end a node other than the one
// that started it waits before finishing it itself (while that node is
// alive): the starter normally does it, the others only when it died.
const graceSlack = 2 * time.Second

// reconcileEvery is the period of the check that this node's connection
// entries match its connections (a failed write, a node declared dead
// while it was only cut off, leftovers of a previous process).
const reconcileEvery = 10 * time.Second

// shownValue is a status entry (JSON).
type shownValue struct {
	State  string `json:"s"`           // shownOnline | shownGrace
	Chosen string `json:"c"`           // the user's chosen status
	Until  int64  `json:"u,omitempty"` // grace: its end, Unix milliseconds
	By     string `json:"n,omitempty"` // grace: the node that started it
	Own    bool   `json:"o,omitempty"` // this write sets the chosen status: tell the user's own connections
	Except string `json:"x,omitempty"` // ... except this connection
}

func decodeShown(b []byte) (shownValue, bool) {
	var v shownValue
	if json.Unmarshal(b, &v) != nil || (v.State != shownOnline && v.State != shownGrace) || !ValidStatus(v.Chosen) {
		return v, false
	}
	return v, true
}

func (v shownValue) encode() []byte {
	b, _ := json.Marshal(v)
	return b
}

// clusterState is the cluster side of the service: which users this node
// has recorded a connection entry for, and the nodes reported down.
type clusterState struct {
	ops [256]sync.Mutex // serialises this node's transitions of one user

	mu    sync.Mutex
	mine  map[string]struct{} // users whose connection entry this node wrote
	down  map[string]struct{} // nodes reported down
	ready chan struct{}       // closed once the first watch delivered its current entries
}

func (c *clusterState) init() {
	c.mine = make(map[string]struct{})
	c.down = make(map[string]struct{})
	c.ready = make(chan struct{})
}

func (c *clusterState) setMine(user string, on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if on {
		c.mine[user] = struct{}{}
	} else {
		delete(c.mine, user)
	}
}

func (c *clusterState) isMine(user string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.mine[user]
	return ok
}

func (c *clusterState) mineList() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.mine))
	for u := range c.mine {
		out = append(out, u)
	}
	return out
}

func (c *clusterState) isDown(node string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.down[node]
	return ok
}

func (s *Service) opLock(user string) *sync.Mutex { return s.stripe(s.cl.ops[:], user) }

// keepRunning calls run until ctx ends, again a second after each early
// return (a watch or subscription that ended, say with the NATS
// connection).
func (s *Service) keepRunning(ctx context.Context, what string, run func() error) {
	for ctx.Err() == nil {
		err := run()
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("chat: "+what+" ended; restarting", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// startCluster runs the watch of the status entries, the typing
// subscription, the NodeDown hook and the reconcile loop (Start).
func (s *Service) startCluster() {
	cl := s.opts.Cluster
	ctx, cancel := context.WithCancel(context.Background())
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		<-s.stop
		cancel()
	}()
	cl.OnNodeDown(func(node string) {
		select {
		case <-s.stop:
			return
		default:
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer safe.Recover(s.log, s.opts.Panics, safe.Chat, nil)
			s.nodeDown(node)
		}()
	})
	s.wg.Add(3)
	go func() {
		defer s.wg.Done()
		first := true
		s.keepRunning(ctx, "user status watch", func() error {
			return cl.WatchStatus(ctx, func(user string, value []byte, rev uint64) {
				if value == nil && user == "" { // end of the current entries
					if first {
						first = false
						close(s.cl.ready)
					}
					return
				}
				s.applyShown(user, value, rev)
			})
		})
	}()
	go func() {
		defer s.wg.Done()
		s.keepRunning(ctx, "typing subscription", func() error {
			return cl.SubscribeTyping(ctx, func(msg []byte) {
				defer safe.Recover(s.log, s.opts.Panics, safe.Chat, nil)
				s.typingEvent(msg)
			})
		})
	}()
	go func() {
		defer s.wg.Done()
		// Leftovers of a previous process with this node id: connection
		// entries of users not connected here go, with a grace.
		s.reconcile(ctx, true)
		t := time.NewTicker(reconcileEvery)
		defer t.Stop()
		for i := 1; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				s.reconcile(ctx, i%3 == 0) // the bucket itself every third time
			}
		}
	}()
}

// reconcile makes this node's connection entries match its connections:
// users connected here with no entry get one (and are shown online), and
// entries of users no longer connected here go (their grace starts). With
// fromKV it also compares with the bucket (entries deleted by others, or
// left over by a previous process); otherwise only with what this node
// believes it wrote.
func (s *Service) reconcile(ctx context.Context, fromKV bool) {
	cl := s.opts.Cluster
	check := map[string]struct{}{}
	for _, u := range s.hub.ConnectedUsers() {
		check[u] = struct{}{}
	}
	for _, u := range s.cl.mineList() {
		check[u] = struct{}{}
	}
	if fromKV {
		lctx, cancel := context.WithTimeout(ctx, opTimeout)
		inKV, err := cl.ConnUsers(lctx, cl.NodeID())
		cancel()
		if err == nil {
			have := make(map[string]struct{}, len(inKV))
			for _, u := range inKV {
				have[u] = struct{}{}
				if !s.cl.isMine(u) {
					s.cl.setMine(u, true) // a leftover: syncPresence deletes it unless connected
				}
				check[u] = struct{}{}
			}
			for u := range check {
				if _, ok := have[u]; !ok && s.cl.isMine(u) {
					s.cl.setMine(u, false) // deleted by another node: written again
				}
			}
		} else if ctx.Err() == nil {
			s.log.Warn("chat: listing this node's user connection entries", "err", err)
		}
	}
	for u := range check {
		if ctx.Err() != nil {
			return
		}
		s.syncPresence(u, "")
	}
}

// syncPresence brings the user's connection entry of this node and their
// status entry in line with the hub (read now, not trusted from the
// event, so that a first connection and a last disconnection racing end
// right): connected here → entry written, status online (a grace is
// cancelled silently; from nothing, their chosen status is announced);
// not connected here → entry deleted and the grace started. newConn is
// the connection that just opened ("" for none): it is not sent its own
// status.
func (s *Service) syncPresence(user, newConn string) {
	mu := s.opLock(user)
	mu.Lock()
	defer mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	cl := s.opts.Cluster
	online := s.hub.UserOnline(user)
	mine := s.cl.isMine(user)
	switch {
	case online && !mine:
		if err := cl.PutConn(ctx, user); err != nil {
			s.log.Error("chat: record a user connection", "user", user, "err", err)
			return // the reconcile loop tries again
		}
		s.cl.setMine(user, true)
		s.ensureOnline(ctx, user, newConn)
	case online && mine:
		if newConn != "" {
			s.ensureOnline(ctx, user, newConn) // e.g. within a grace of another node's
		}
	case !online && mine:
		if err := cl.DeleteConn(ctx, user, cl.NodeID()); err != nil {
			s.log.Error("chat: forget a user connection", "user", user, "err", err)
			return // the reconcile loop tries again
		}
		s.cl.setMine(user, false)
		s.startGrace(ctx, user, true)
	}
}

// ensureOnline makes the user's status entry online: created from their
// stored status when there is none (the audience is told; the user's own
// connections are not: the new one asks GET /api/presence, as on one
// node), or a grace
// turned back to online (nothing to tell: the others saw the chosen
// status all along).
func (s *Service) ensureOnline(ctx context.Context, user, newConn string) {
	cl := s.opts.Cluster
	for attempt := 0; attempt < 10; attempt++ {
		b, rev, err := cl.GetStatus(ctx, user)
		if err != nil {
			s.log.Error("chat: read user status entry", "user", user, "err", err)
			return
		}
		if rev == 0 {
			chosen, err := s.chosenStatus(ctx, user)
			if err != nil {
				s.log.Error("chat: load user status", "user", user, "err", err)
			}
			if !ValidStatus(chosen) {
				chosen = StatusOnline
			}
			_, ok, err := cl.CreateStatus(ctx, user, shownValue{State: shownOnline, Chosen: chosen}.encode())
			if err != nil {
				s.log.Error("chat: write user status entry", "user", user, "err", err)
				return
			}
			if ok {
				s.emit(EventUserOnline, UserEvent{UserID: user}) // this node's create won: once
				return
			}
			continue
		}
		v, valid := decodeShown(b)
		if valid && v.State == shownOnline {
			return
		}
		if !valid {
			v = shownValue{Chosen: StatusOnline}
		}
		_, ok, err := cl.UpdateStatus(ctx, user, shownValue{State: shownOnline, Chosen: v.Chosen}.encode(), rev)
		if err != nil {
			s.log.Error("chat: write user status entry", "user", user, "err", err)
			return
		}
		if ok {
			return
		}
	}
	s.log.Error("chat: user status entry keeps changing", "user", user)
}

// startGrace starts (or, with extend, restarts) the user's grace: their
// status entry becomes a grace ending PresenceOfflineGrace from now, by
// this node. Whether they still have a connection anywhere is decided when
// it ends (graceEnded), from the bucket.
func (s *Service) startGrace(ctx context.Context, user string, extend bool) {
	cl := s.opts.Cluster
	for attempt := 0; attempt < 10; attempt++ {
		b, rev, err := cl.GetStatus(ctx, user)
		if err != nil {
			s.log.Error("chat: read user status entry", "user", user, "err", err)
			return
		}
		if rev == 0 {
			return // offline already
		}
		v, valid := decodeShown(b)
		if !valid {
			v = shownValue{Chosen: StatusOnline}
		}
		if v.State == shownGrace && !extend {
			return
		}
		until := time.Now().Add(s.opts.PresenceOfflineGrace).UnixMilli()
		_, ok, err := cl.UpdateStatus(ctx, user, shownValue{State: shownGrace, Chosen: v.Chosen, Until: until, By: cl.NodeID()}.encode(), rev)
		if err != nil {
			s.log.Error("chat: write user status entry", "user", user, "err", err)
			return
		}
		if ok {
			return
		}
	}
	s.log.Error("chat: user status entry keeps changing", "user", user)
}

// graceEnded finishes a grace (the timer that applyShown set fired on
// this node): a user with a connection entry anywhere is online again,
// silently; one with none is offline (the entry is deleted; every node
// tells its connections). Compare-and-set on the revision read: with
// several nodes finishing the same grace, one does it.
func (s *Service) graceEnded(user string) {
	mu := s.opLock(user)
	mu.Lock()
	defer mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	cl := s.opts.Cluster
	b, rev, err := cl.GetStatus(ctx, user)
	if err != nil || rev == 0 {
		if err != nil {
			s.log.Error("chat: read user status entry", "user", user, "err", err)
			s.pres.grace.Set(user, time.Now().Add(time.Second)) // try again
		}
		return
	}
	v, valid := decodeShown(b)
	if valid && v.State != shownGrace {
		return
	}
	if valid && time.Now().UnixMilli() < v.Until {
		s.pres.grace.Set(user, time.UnixMilli(v.Until))
		return
	}
	has, err := cl.HasConns(ctx, user)
	if err != nil {
		s.log.Error("chat: list user connection entries", "user", user, "err", err)
		s.pres.grace.Set(user, time.Now().Add(time.Second))
		return
	}
	if has {
		_, _, err = cl.UpdateStatus(ctx, user, shownValue{State: shownOnline, Chosen: v.Chosen}.encode(), rev)
	} else {
		var deleted bool
		deleted, err = cl.DeleteStatus(ctx, user, rev)
		if err == nil && deleted {
			s.emit(EventUserOffline, UserEvent{UserID: user}) // this node's delete won: once
		}
	}
	if err != nil {
		s.log.Error("chat: write user status entry", "user", user, "err", err)
		s.pres.grace.Set(user, time.Now().Add(time.Second))
	}
}

// applyShown applies one status entry from the watch (value nil: deleted,
// the user is offline) to this node's view, and tells this node's
// connections what changed (publish: coalesced per user as on one node).
// Each node does so for its own connections only, so every connection
// hears of a change once.
func (s *Service) applyShown(user string, value []byte, rev uint64) {
	mu := s.presenceLock(user)
	mu.Lock()
	defer mu.Unlock()
	prev := s.pres.get(user)
	if prev != nil && rev != 0 && rev <= prev.rev {
		return // seen already (a restarted watch)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if value == nil {
		s.pres.grace.Delete(user)
		if prev == nil {
			return
		}
		s.pres.put(user, nil)
		s.publish(ctx, user, "", "")
		return
	}
	v, ok := decodeShown(value)
	if !ok {
		s.log.Warn("chat: ignoring a malformed user status entry", "user", user, "revision", rev)
		return
	}
	up := &userPresence{chosen: v.Chosen, rev: rev, state: v.State, until: v.Until, by: v.By}
	s.pres.put(user, up)
	if v.State == shownGrace {
		s.pres.grace.Set(user, s.graceDeadline(up))
	} else {
		s.pres.grace.Delete(user)
	}
	own := ""
	if v.Own {
		own = v.Chosen
	}
	s.publish(ctx, user, own, v.Except)
}

// graceDeadline is when this node finishes a grace: at its end when this
// node started it or its starter is down, graceSlack later otherwise.
func (s *Service) graceDeadline(up *userPresence) time.Time {
	t := time.UnixMilli(up.until)
	if up.by != s.opts.Cluster.NodeID() && !s.cl.isDown(up.by) {
		t = t.Add(graceSlack)
	}
	return t
}

// nodeDown: node died or drains. Its typers get typing:stop (from each
// node, to its own connections); its connection entries are removed and
// the users left with none anywhere start their grace (once: a grace in
// progress is not restarted); graces it started are finished here on time.
func (s *Service) nodeDown(node string) {
	s.cl.mu.Lock()
	s.cl.down[node] = struct{}{}
	s.cl.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 4*opTimeout)
	defer cancel()
	s.remoteTypersDown(ctx, node)

	s.pres.mu.Lock()
	var graces []string
	for u, up := range s.pres.users {
		if up.state == shownGrace && up.by == node {
			graces = append(graces, u)
		}
	}
	s.pres.mu.Unlock()
	for _, u := range graces {
		if up := s.pres.get(u); up != nil && up.state == shownGrace {
			s.pres.grace.Set(u, s.graceDeadline(up))
		}
	}

	cl := s.opts.Cluster
	users, err := cl.ConnUsers(ctx, node)
	if err != nil {
		s.log.Error("chat: list a down node's user connection entries", "node", node, "err", err)
		return
	}
	for _, u := range users {
		if err := cl.DeleteConn(ctx, u, node); err != nil {
			s.log.Error("chat: forget a down node's user connection", "node", node, "user", u, "err", err)
			continue
		}
		mu := s.opLock(u)
		mu.Lock()
		s.startGrace(ctx, u, false)
		mu.Unlock()
	}
	if len(users) > 0 {
		s.log.Info("chat: users of a down node start their offline grace", "node", node, "users", len(users))
	}
}

// ---------------------------------------------------------------- typing --

// Typing events between nodes (JSON on the cluster's typing subject).
const (
	typingOpStart = "start" // node N's user types in the room (every start, renewals too)
	typingOpStop  = "stop"  // node N's typing ended; N sent typing:stop
	typingOpEnd   = "end"   // end this typing (a post or a removal elsewhere): its node sends typing:stop
)

type typingMsg struct {
	Op   string `json:"op"`
	Room string `json:"r"`
	User string `json:"u"`
	Node string `json:"n"`
}

func (s *Service) publishTyping(op string, k typingKey) {
	if s.opts.Cluster == nil {
		return
	}
	b, _ := json.Marshal(typingMsg{Op: op, Room: k.room, User: k.user, Node: s.opts.Cluster.NodeID()})
	s.opts.Cluster.PublishTyping(b)
}

// typingEvent applies another node's typing event: the table of remote
// typers (for nodeDown), or an end of a typing of this node's.
func (s *Service) typingEvent(b []byte) {
	var m typingMsg
	if json.Unmarshal(b, &m) != nil || m.Room == "" || m.User == "" || m.Node == s.opts.Cluster.NodeID() {
		return
	}
	k := typingKey{room: m.Room, user: m.User}
	switch m.Op {
	case typingOpStart:
		s.typing.remoteSet(k, m.Node)
		// Kept past the typing timeout until the typer's node says stop:
		// if that node dies instead, it is declared dead up to 15 s later
		// (node-dead-after < 15 s), and nodeDown must still find the typer
		// to send its typing:stop (the review found none with defaults).
		s.typing.remote.Set(k, time.Now().Add(s.opts.TypingTimeout+remoteTyperHorizon))
	case typingOpStop:
		if s.typing.remoteDel(k, m.Node) {
			s.typing.remote.Delete(k)
		}
	case typingOpEnd:
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		s.endTypingHere(ctx, k)
	}
}

// remoteTyperHorizon is how long past the typing timeout a remote typer is
// remembered without a word from its node: longer than the longest
// node-dead-after (15 s) plus slack, so a dead node's typers are still
// known when it is declared dead.
const remoteTyperHorizon = 20 * time.Second

// remoteExpired forgets a remote typer whose node said nothing for the
// typing timeout plus remoteTyperHorizon (its stop was lost while it stayed
// alive): nothing is sent.
func (s *Service) remoteExpired(k typingKey) {
	if s.typing.remote.Settle(k) {
		s.typing.remoteDel(k, "")
	}
}

// remoteTypersDown sends typing:stop for each typer of a down node to the
// room's other members connected to this node (each node does so for its
// own connections: one typing:stop per connection).
func (s *Service) remoteTypersDown(ctx context.Context, node string) {
	for _, k := range s.typing.remoteOf(node) {
		s.typing.remote.Delete(k)
		others, err := s.othersOf(ctx, k.room, k.user)
		if err != nil {
			s.log.Error("chat: typing audience", "room", k.room, "err", err)
			continue
		}
		if len(others) > 0 {
			s.hub.SendToUsers(others, protocol.Encode(protocol.TypeTypingStop, "", typingEvent{RoomID: k.room, UserID: k.user}), "")
		}
	}
}

// toUsers delivers a status frame: through the Broker on one node; in a
// cluster to this node's connections only (every node applies every
// status change from the watch and tells its own connections).
func (s *Service) toUsers(users []string, frame []byte, except string) {
	if s.opts.Cluster != nil {
		s.hub.SendToUsers(users, frame, except)
		return
	}
	s.broker.ToUsers(users, frame, except)
}

// toAll is toUsers for every connection.
func (s *Service) toAll(frame []byte, except string) {
	if s.opts.Cluster != nil {
		s.hub.SendAll(frame, except)
		return
	}
	s.broker.ToAll(frame, except)
}

// clusterSetStatus serves presence:update in a cluster: the status is
// stored, then written into the user's status entry with Own set, so that
// every node tells the user's own connections (but sess) at once and the
// others what they see (coalesced per node).
func (s *Service) clusterSetStatus(ctx context.Context, sess interface{ ID() string }, user, status string) error {
	mu := s.opLock(user)
	mu.Lock()
	defer mu.Unlock()
	if err := s.setChosenStatus(ctx, user, status); err != nil {
		return s.internal(err, "store status")
	}
	cl := s.opts.Cluster
	for attempt := 0; attempt < 10; attempt++ {
		b, rev, err := cl.GetStatus(ctx, user)
		if err != nil {
			return s.internal(err, "read status")
		}
		v := shownValue{State: shownOnline, Chosen: status, Own: true, Except: sess.ID()}
		var ok bool
		if rev == 0 {
			_, ok, err = cl.CreateStatus(ctx, user, v.encode())
			if err == nil && ok {
				s.emit(EventUserOnline, UserEvent{UserID: user})
			}
		} else {
			if old, valid := decodeShown(b); valid && old.State == shownGrace {
				v.State, v.Until, v.By = old.State, old.Until, old.By
			}
			_, ok, err = cl.UpdateStatus(ctx, user, v.encode(), rev)
		}
		if err != nil {
			return s.internal(err, "write status")
		}
		if ok {
			return nil
		}
	}
	return s.internal(errors.New("user status entry keeps changing"), "write status")
}
