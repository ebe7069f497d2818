package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Node states in the registry.
const (
	stateAlive    = "alive"
	stateDraining = "draining"
)

// pingTimeout bounds the ping of a registered namesake at Join.
const pingTimeout = time.Second

// nodeValue is a node's entry in the <cluster>_nodes KV bucket (JSON),
// under the key <id>. Times are RFC 3339 with nanoseconds; they are for
// operators only: liveness is judged by when an entry is received.
type nodeValue struct {
	ID        string    `json:"id"`
	State     string    `json:"state"`     // alive | draining
	Started   time.Time `json:"started"`   // when the process joined
	Heartbeat time.Time `json:"heartbeat"` // when this entry was written
	Instance  string    `json:"instance"`  // random per process (tells a namesake apart)
}

// peer is what this node knows of another node of the registry.
type peer struct {
	state    string    // alive | draining
	lastSeen time.Time // local receive time of its last entry
	rev      uint64    // KV revision of that entry
	down     bool      // NodeDown reported since it was last seen alive
	instance string    // the process behind the id (nodeValue.Instance)
}

// registry is the node's view of <cluster>_nodes and of its own key.
type registry struct {
	// keyMu serialises writes of this node's own key (register, heartbeat,
	// Drain, Leave); it is held across the KV calls.
	keyMu sync.Mutex

	mu        sync.Mutex
	peers     map[string]*peer
	sighted   bool      // connected and watching, initial values read
	lastEcho  time.Time // when this node's own entry last came back through the watch
	echoLost  bool      // it has not for DeadAfter-Heartbeat: the registry is not trusted
	rev       uint64
	state     string
	started   time.Time
	joined    bool
	left      bool
	displaced error // set when another process took this node's key
	// displacedC is closed when displaced is set (Node.Displaced).
	displacedC chan struct{}

	rewatch chan struct{}
}

func (r *registry) init() {
	r.displacedC = make(chan struct{})
	r.peers = map[string]*peer{}
	r.state = stateAlive
	r.started = time.Now().UTC()
	r.rewatch = make(chan struct{}, 1)
}

// refresh gives every known node a full DeadAfter from now, after a time
// this node could not hear them. mu is held.
func (r *registry) refresh(now time.Time) {
	for _, p := range r.peers {
		if p.lastSeen.Before(now) {
			p.lastSeen = now
		}
	}
}

func (r *registry) displacedErr() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.displaced
}

// blind stops dead detection until the registry is watched again: while
// this node cannot receive heartbeats, silence proves nothing.
func (r *registry) blind() {
	r.mu.Lock()
	r.sighted = false
	r.mu.Unlock()
}

func (r *registry) requestRewatch() {
	select {
	case r.rewatch <- struct{}{}:
	default:
	}
}

func (r *registry) ownRev() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rev
}

func (r *registry) setOwnRev(rev uint64) {
	r.mu.Lock()
	r.rev = rev
	r.mu.Unlock()
}

// isConflict reports a KV compare-and-set that lost: the key exists
// (Create) or its revision is not the expected one (Update, Delete with
// LastRevision). JetStream reports both as "wrong last sequence" (API
// error 10071, or 10164 on replicated streams).
func isConflict(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

func (n *Node) value(state string) []byte {
	n.reg.mu.Lock()
	started := n.reg.started
	n.reg.mu.Unlock()
	b, _ := json.Marshal(nodeValue{ID: n.id, State: state, Started: started, Heartbeat: time.Now().UTC(), Instance: n.instance})
	return b
}

// register puts this node's key in <cluster>_nodes (KV Create). When the
// key exists, the holder is pinged on <cluster>.node.<id>.ping: an answer
// means it is alive and Join fails; no responders or no answer within
// pingTimeout means it crashed and the key is taken over (KV Update with
// the holder's revision). Then this node answers pings itself, and checks
// that no namesake took the key over while it was starting.
func (n *Node) register(ctx context.Context) error {
	n.reg.keyMu.Lock()
	defer n.reg.keyMu.Unlock()
	val := n.value(stateAlive)
	var rev uint64
	for attempt := 0; ; attempt++ {
		if attempt == 5 {
			return fmt.Errorf("cluster: node %q in cluster %q: the registry key keeps changing; is another node starting with the same id?", n.id, n.subj.cluster)
		}
		var err error
		rev, err = n.nodesKV.Create(ctx, n.id, val)
		if err == nil {
			break
		}
		if !isConflict(err) {
			return fmt.Errorf("cluster: register node %q in KV bucket %s: %w", n.id, n.subj.nodesBucket, err)
		}
		e, err := n.nodesKV.Get(ctx, n.id)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // deleted meanwhile: create again
		}
		if err != nil {
			return fmt.Errorf("cluster: read node %q in KV bucket %s: %w", n.id, n.subj.nodesBucket, err)
		}
		pctx, cancel := context.WithTimeout(ctx, pingTimeout)
		_, pingErr := n.nc.RequestWithContext(pctx, n.subj.nodePing(n.id), []byte(n.instance))
		cancel()
		err = pingErr
		if err == nil {
			return fmt.Errorf("cluster: a node with id %q is alive in cluster %q (it answered on %s); refusing to start a second one",
				n.id, n.subj.cluster, n.subj.nodePing(n.id))
		}
		if !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("cluster: ping node %q: %w", n.id, err)
		}
		rev, err = n.nodesKV.Update(ctx, n.id, val, e.Revision())
		if err == nil {
			n.log.Warn("took over the registry key of a crashed node with the same id (it did not answer its ping)",
				"ping_error", pingErr, "old_revision", e.Revision())
			break
		}
		if !isConflict(err) {
			return fmt.Errorf("cluster: take over node %q in KV bucket %s: %w", n.id, n.subj.nodesBucket, err)
		}
	}
	n.reg.mu.Lock()
	n.reg.rev, n.reg.joined = rev, true
	n.reg.mu.Unlock()

	sub, err := n.nc.Subscribe(n.subj.nodePing(n.id), n.answerPing)
	if err != nil {
		return fmt.Errorf("cluster: subscribe %s: %w", n.subj.nodePing(n.id), err)
	}
	n.pingSub = sub
	if err := n.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("cluster: flush NATS: %w", err)
	}
	// A namesake that pinged before this node answered may have taken the
	// key over: then it is the one that stays.
	e, err := n.nodesKV.Get(ctx, n.id)
	if err != nil {
		return fmt.Errorf("cluster: read node %q in KV bucket %s: %w", n.id, n.subj.nodesBucket, err)
	}
	if e.Revision() != rev {
		return fmt.Errorf("cluster: a node with id %q started at the same time in cluster %q and took the registry key; refusing to start a second one",
			n.id, n.subj.cluster)
	}
	return nil
}

// answerPing answers a namesake's ping, unless it is this process's own
// or this node lost its key.
func (n *Node) answerPing(m *nats.Msg) {
	if string(m.Data) == n.instance || n.reg.displacedErr() != nil {
		return
	}
	_ = m.Respond([]byte(n.instance))
}

// watch is a running watch of the registry bucket. The NATS client ties a
// watch to the context it was started with: it ends when that is done.
type watch struct {
	w      jetstream.KeyWatcher
	cancel context.CancelFunc
}

func (w *watch) stop() {
	_ = w.w.Stop()
	w.cancel()
}

// watchRegistry starts a watch of every key of <cluster>_nodes (it lives
// until stopped or Close) and applies its initial values (the last entry
// of each key), waiting for them at most until wait is done. Known nodes
// whose key is gone altogether count as deleted. Then dead detection
// resumes, each known node having a full DeadAfter to show a heartbeat.
func (n *Node) watchRegistry(wait context.Context) (*watch, error) {
	wctx, cancel := context.WithCancel(n.ctx)
	type started struct {
		w   jetstream.KeyWatcher
		err error
	}
	ch := make(chan started, 1)
	go func() {
		w, err := n.nodesKV.WatchAll(wctx)
		ch <- started{w, err}
	}()
	var w *watch
	select {
	case r := <-ch:
		if r.err != nil {
			cancel()
			return nil, fmt.Errorf("cluster: watch KV bucket %s: %w", n.subj.nodesBucket, r.err)
		}
		w = &watch{r.w, cancel}
	case <-wait.Done():
		cancel() // ends the request, and the watch if it started
		return nil, fmt.Errorf("cluster: watch KV bucket %s: %w", n.subj.nodesBucket, wait.Err())
	}
	seen := map[string]bool{}
initial:
	for {
		select {
		case e, ok := <-w.w.Updates():
			if !ok {
				w.stop()
				return nil, fmt.Errorf("cluster: watch of KV bucket %s ended", n.subj.nodesBucket)
			}
			if e == nil {
				break initial
			}
			seen[e.Key()] = true
			n.onEntry(e, time.Now())
		case <-wait.Done():
			w.stop()
			return nil, fmt.Errorf("cluster: watch KV bucket %s: initial values: %w", n.subj.nodesBucket, wait.Err())
		}
	}
	now := time.Now()
	n.reg.mu.Lock()
	for id, p := range n.reg.peers {
		if !seen[id] {
			if !p.down {
				n.log.Warn("node left the registry while this node was not watching", "peer", id)
				n.enqueueNodeDown(id)
			}
			delete(n.reg.peers, id)
			continue
		}
	}
	n.reg.refresh(now)
	n.reg.sighted = true
	n.reg.mu.Unlock()
	return w, nil
}

// onEntry applies one registry entry received at now.
func (n *Node) onEntry(e jetstream.KeyValueEntry, now time.Time) {
	id := e.Key()
	n.reg.mu.Lock()
	defer n.reg.mu.Unlock()
	if id == n.id {
		// This node's own entry (the heartbeat writes it): proof that
		// writes and the watch work, so silence from others means
		// something.
		if e.Operation() == jetstream.KeyValuePut {
			n.reg.lastEcho = now
			if n.reg.echoLost {
				n.reg.echoLost = false
				n.log.Info("own heartbeats come back through the registry again; judging other nodes again")
				n.reg.refresh(now)
			}
		}
		return
	}
	switch e.Operation() {
	case jetstream.KeyValuePut:
		var v nodeValue
		if err := json.Unmarshal(e.Value(), &v); err != nil || (v.State != stateAlive && v.State != stateDraining) {
			n.log.Warn("ignoring a malformed registry entry", "peer", id, "revision", e.Revision())
			return
		}
		p := n.reg.peers[id]
		if p == nil {
			p = &peer{}
			n.reg.peers[id] = p
		}
		if p.instance != "" && v.Instance != p.instance && !p.down {
			// A new process took the id over (a crashed node restarted
			// with the same id before it was declared dead): the previous
			// one is gone with its connections, rooms and calls.
			n.log.Warn("node restarted under the same id: the previous process is down", "peer", id)
			n.enqueueNodeDown(id)
		}
		p.lastSeen, p.rev, p.state, p.instance = now, e.Revision(), v.State, v.Instance
		switch {
		case v.State == stateDraining && !p.down:
			p.down = true
			n.log.Info("node is draining", "peer", id)
			n.enqueueNodeDown(id)
		case v.State == stateAlive && p.down:
			p.down = false
			n.log.Warn("node declared dead is heartbeating again", "peer", id)
		}
	default: // KeyValueDelete, KeyValuePurge: the node left (or was cleaned up)
		p := n.reg.peers[id]
		if p == nil {
			return
		}
		if !p.down {
			n.log.Info("node left the cluster", "peer", id)
			n.enqueueNodeDown(id)
		}
		delete(n.reg.peers, id)
	}
}

func (n *Node) sweepEvery() time.Duration {
	return min(max(n.opts.DeadAfter/20, 10*time.Millisecond), 500*time.Millisecond)
}

// sweep declares dead every node silent for more than DeadAfter: it
// reports NodeDown once and deletes the node's key if it is still the
// entry last seen (KV Delete with LastRevision), so the registry cleans
// itself. Nothing is declared while this node is blind: disconnected, its
// watch being restarted, or its own heartbeats not coming back through the
// watch for DeadAfter-Heartbeat (JetStream unavailable while core NATS
// works, or a broken watch): then everyone's silence proves nothing, and
// once it hears itself again every node gets a full DeadAfter.
func (n *Node) sweep(now time.Time) {
	if !n.nc.IsConnected() {
		return
	}
	type dead struct {
		id     string
		rev    uint64
		silent time.Duration
	}
	var found []dead
	n.reg.mu.Lock()
	if !n.reg.sighted {
		n.reg.mu.Unlock()
		return
	}
	if now.Sub(n.reg.lastEcho) > n.opts.DeadAfter-n.opts.Heartbeat && !n.reg.left && n.reg.displaced == nil {
		if !n.reg.echoLost {
			n.reg.echoLost = true
			n.log.Warn("own heartbeats are not coming back through the registry; not judging other nodes until they do",
				"since", now.Sub(n.reg.lastEcho).Round(time.Millisecond))
		}
		n.reg.mu.Unlock()
		return
	}
	for id, p := range n.reg.peers {
		if silent := now.Sub(p.lastSeen); !p.down && silent > n.opts.DeadAfter {
			p.down = true
			found = append(found, dead{id, p.rev, silent})
			n.enqueueNodeDown(id)
		}
	}
	n.reg.mu.Unlock()
	for _, d := range found {
		n.log.Warn("node declared dead", "peer", d.id, "silent_for", d.silent.Round(time.Millisecond))
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
			defer cancel()
			err := n.nodesKV.Delete(ctx, d.id, jetstream.LastRevision(d.rev))
			if err != nil && !isConflict(err) {
				n.log.Debug("deleting a dead node's registry key", "peer", d.id, "err", err)
			}
		}()
	}
}

// registryLoop follows the registry: watch updates, the dead-node sweep,
// and a new watch after every reconnect (or when one failed).
func (n *Node) registryLoop(w *watch) {
	defer n.wg.Done()
	var updates <-chan jetstream.KeyValueEntry
	if w != nil {
		updates = w.w.Updates()
	}
	defer func() {
		if w != nil {
			w.stop()
		}
	}()
	stopWatch := func() {
		if w != nil {
			w.stop()
		}
		w, updates = nil, nil
		n.reg.blind()
	}
	startWatch := func() {
		if !n.nc.IsConnected() {
			return
		}
		ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
		defer cancel()
		nw, err := n.watchRegistry(ctx)
		if err != nil {
			n.log.Debug("watching the registry", "err", err)
			return
		}
		w, updates = nw, nw.w.Updates()
	}
	t := time.NewTicker(n.sweepEvery())
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-n.reg.rewatch:
			stopWatch()
			startWatch()
		case e, ok := <-updates:
			if !ok {
				stopWatch()
				continue
			}
			if e != nil {
				n.onEntry(e, time.Now())
			}
		case <-t.C:
			if w == nil {
				startWatch()
			}
			// Apply what already arrived before judging silence.
		drain:
			for updates != nil {
				select {
				case e, ok := <-updates:
					if !ok {
						stopWatch()
						break drain
					}
					if e != nil {
						n.onEntry(e, time.Now())
					}
				default:
					break drain
				}
			}
			n.sweep(time.Now())
		}
	}
}

func (n *Node) heartbeatLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.opts.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
			n.beat()
		}
	}
}

// beat writes this node's entry again (KV Update with its last revision).
func (n *Node) beat() {
	if !n.nc.IsConnected() || n.skipBeats.Load() {
		return
	}
	n.reg.keyMu.Lock()
	defer n.reg.keyMu.Unlock()
	n.reg.mu.Lock()
	state, skip := n.reg.state, n.reg.left || n.reg.displaced != nil
	n.reg.mu.Unlock()
	if skip {
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, max(n.opts.Heartbeat, time.Second))
	defer cancel()
	if err := n.writeOwn(ctx, state); err != nil && n.ctx.Err() == nil {
		n.log.Warn("registry heartbeat failed", "err", err)
	}
}

// writeOwn writes this node's entry with state, compare-and-set on the
// revision it last wrote. On a conflict it reads the key: its own entry
// (an acknowledgement was lost) is rewritten; a deleted key (this node was
// declared dead while unreachable) is created again and the room handler
// gets a Resync; another process's entry means this node was displaced by
// a namesake: it stops heartbeating and Healthy reports it. keyMu is held.
func (n *Node) writeOwn(ctx context.Context, state string) error {
	val := n.value(state)
	rev, err := n.nodesKV.Update(ctx, n.id, val, n.reg.ownRev())
	if err == nil {
		n.reg.setOwnRev(rev)
		return nil
	}
	if !isConflict(err) {
		return err
	}
	e, err := n.nodesKV.Get(ctx, n.id)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		rev, err := n.nodesKV.Create(ctx, n.id, val)
		if err != nil {
			return err
		}
		n.reg.setOwnRev(rev)
		n.log.Warn("this node's registry key had been deleted (declared dead while unreachable?); registered again and resyncing rooms")
		n.enqueueResync()
		return nil
	case err != nil:
		return err
	}
	var v nodeValue
	if json.Unmarshal(e.Value(), &v) == nil && v.Instance == n.instance {
		rev, err := n.nodesKV.Update(ctx, n.id, val, e.Revision())
		if err == nil {
			n.reg.setOwnRev(rev)
		}
		return err
	}
	derr := fmt.Errorf("cluster: another process took over node id %q in cluster %q (registry key revision %d); this node stopped heartbeating",
		n.id, n.subj.cluster, e.Revision())
	n.reg.mu.Lock()
	if n.reg.displaced == nil {
		close(n.reg.displacedC)
	}
	n.reg.displaced = derr
	n.reg.mu.Unlock()
	n.log.Error("node displaced by a namesake", "err", derr)
	return derr
}

// Displaced is closed when another process took over this node's id in
// the registry (this one was unreachable and did not answer the new one's
// ping in time): this process must stop serving, since the cluster now
// routes the id's rooms and calls to the other one. Healthy reports the
// same error from then on.
func (n *Node) Displaced() <-chan struct{} { return n.reg.displacedC }

// Alive implements rooms.Cluster: node is registered, its last entry
// arrived within DeadAfter and says alive (not draining). For this node
// itself: it joined, has not drained, left or been displaced.
func (n *Node) Alive(node string) bool {
	n.reg.mu.Lock()
	defer n.reg.mu.Unlock()
	if node == n.id {
		return n.reg.joined && !n.reg.left && n.reg.displaced == nil && n.reg.state == stateAlive
	}
	p := n.reg.peers[node]
	return p != nil && !p.down && p.state == stateAlive && time.Since(p.lastSeen) <= n.opts.DeadAfter
}

// Drain announces that this node is leaving: its entry in <cluster>_nodes
// says draining, so every other node reports NodeDown for it at once and
// Alive(this node) is false everywhere. The node keeps heartbeating and
// messaging until Leave or Close. Errors: the KV update failed (ctx, NATS).
func (n *Node) Drain(ctx context.Context) error {
	n.reg.keyMu.Lock()
	defer n.reg.keyMu.Unlock()
	n.reg.mu.Lock()
	if n.reg.left || n.reg.displaced != nil {
		n.reg.mu.Unlock()
		return nil
	}
	n.reg.state = stateDraining
	n.reg.mu.Unlock()
	n.log.Info("draining: announced in the registry")
	return n.writeOwn(ctx, stateDraining)
}

// Leave deletes this node's key from <cluster>_nodes (KV Delete with its
// last revision) and stops heartbeating; the other nodes report NodeDown at
// once unless Drain already made them. A key another process took over is
// left alone. Calling it again does nothing. Close calls it.
func (n *Node) Leave(ctx context.Context) error {
	n.reg.keyMu.Lock()
	defer n.reg.keyMu.Unlock()
	n.reg.mu.Lock()
	if n.reg.left || !n.reg.joined || n.reg.displaced != nil {
		n.reg.left = true
		n.reg.mu.Unlock()
		return nil
	}
	n.reg.left = true
	rev := n.reg.rev
	n.reg.mu.Unlock()
	err := n.nodesKV.Delete(ctx, n.id, jetstream.LastRevision(rev))
	if !isConflict(err) {
		return err
	}
	e, err := n.nodesKV.Get(ctx, n.id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	var v nodeValue
	if json.Unmarshal(e.Value(), &v) != nil || v.Instance != n.instance {
		return nil
	}
	return n.nodesKV.Delete(ctx, n.id, jetstream.LastRevision(e.Revision()))
}
