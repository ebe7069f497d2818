package cluster

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Status is a node's side of the cluster-wide user status and typing
// (chat.Cluster; docs/cluster.md "User status and typing"):
//
//	<cluster>_presence            JetStream KV bucket, History 1:
//	    c.<userToken>.<node>      the node holds a connection of the user (value: the node id)
//	    s.<userToken>             the user's shown status (chat's JSON), written by compare-and-set; none = offline
//	<cluster>.typing              core NATS: typing events of every node (start, stop, end)
//
// Create it with Node.Status after Join; it lives as long as the node.
type Status struct {
	n      *Node
	kv     jetstream.KeyValue
	typing string
}

// Status opens (creating when missing) the KV bucket <cluster>_presence.
func (n *Node) Status(ctx context.Context) (*Status, error) {
	kv, err := n.bucket(ctx, jetstream.KeyValueConfig{Bucket: n.subj.cluster + "_presence", History: 1,
		Description: "Parley cluster " + n.subj.cluster + ": user connections per node and user status"})
	if err != nil {
		return nil, err
	}
	return &Status{n: n, kv: kv, typing: n.subj.cluster + ".typing"}, nil
}

func connKey(user, node string) string { return "c." + userToken(user) + "." + node }
func statusKey(user string) string     { return "s." + userToken(user) }

func tokenUser(tok string) (string, bool) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	return string(b), err == nil
}

// NodeID implements chat.Cluster.
func (s *Status) NodeID() string { return s.n.id }

// PutConn implements chat.Cluster.
func (s *Status) PutConn(ctx context.Context, user string) error {
	_, err := s.kv.Put(ctx, connKey(user, s.n.id), []byte(s.n.id))
	return err
}

// DeleteConn implements chat.Cluster.
func (s *Status) DeleteConn(ctx context.Context, user, node string) error {
	if !ValidNodeID(node) {
		return fmt.Errorf("cluster: invalid node id %q", node)
	}
	err := s.kv.Delete(ctx, connKey(user, node))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	return err
}

// keys lists the keys matching filter (deleted ones left out).
func (s *Status) keys(ctx context.Context, filter string, first bool) ([]string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	l, err := s.kv.ListKeysFiltered(ctx, filter)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		return nil, err
	}
	defer func() { _ = l.Stop() }()
	var out []string
	for k := range l.Keys() {
		out = append(out, k)
		if first {
			break
		}
	}
	if err := ctx.Err(); err != nil && (len(out) == 0 || !first) {
		return nil, err
	}
	return out, nil
}

// HasConns implements chat.Cluster.
func (s *Status) HasConns(ctx context.Context, user string) (bool, error) {
	ks, err := s.keys(ctx, "c."+userToken(user)+".*", true)
	return len(ks) > 0, err
}

// ConnUsers implements chat.Cluster.
func (s *Status) ConnUsers(ctx context.Context, node string) ([]string, error) {
	if !ValidNodeID(node) {
		return nil, fmt.Errorf("cluster: invalid node id %q", node)
	}
	ks, err := s.keys(ctx, "c.*."+node, false)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(ks))
	for _, k := range ks {
		parts := strings.Split(k, ".")
		if len(parts) != 3 {
			continue
		}
		if u, ok := tokenUser(parts[1]); ok {
			out = append(out, u)
		}
	}
	return out, nil
}

// GetStatus implements chat.Cluster.
func (s *Status) GetStatus(ctx context.Context, user string) ([]byte, uint64, error) {
	e, err := s.kv.Get(ctx, statusKey(user))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	return e.Value(), e.Revision(), nil
}

// CreateStatus implements chat.Cluster.
func (s *Status) CreateStatus(ctx context.Context, user string, value []byte) (uint64, bool, error) {
	rev, err := s.kv.Create(ctx, statusKey(user), value)
	if isConflict(err) {
		return 0, false, nil
	}
	return rev, err == nil, err
}

// UpdateStatus implements chat.Cluster.
func (s *Status) UpdateStatus(ctx context.Context, user string, value []byte, rev uint64) (uint64, bool, error) {
	nrev, err := s.kv.Update(ctx, statusKey(user), value, rev)
	if isConflict(err) {
		return 0, false, nil
	}
	return nrev, err == nil, err
}

// DeleteStatus implements chat.Cluster.
func (s *Status) DeleteStatus(ctx context.Context, user string, rev uint64) (bool, error) {
	err := s.kv.Delete(ctx, statusKey(user), jetstream.LastRevision(rev))
	if isConflict(err) {
		return false, nil
	}
	return err == nil, err
}

// WatchStatus implements chat.Cluster.
func (s *Status) WatchStatus(ctx context.Context, fn func(user string, value []byte, rev uint64)) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := s.kv.Watch(wctx, "s.*")
	if err != nil {
		return fmt.Errorf("cluster: watch user statuses: %w", err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("cluster: the watch of user statuses ended")
			}
			if e == nil {
				fn("", nil, 0)
				continue
			}
			u, ok := tokenUser(strings.TrimPrefix(e.Key(), "s."))
			if !ok {
				continue
			}
			if e.Operation() != jetstream.KeyValuePut {
				fn(u, nil, e.Revision())
				continue
			}
			v := e.Value()
			if v == nil {
				v = []byte{}
			}
			fn(u, v, e.Revision())
		}
	}
}

// PublishTyping implements chat.Cluster: on <cluster>.typing.
func (s *Status) PublishTyping(msg []byte) { s.n.publish(s.typing, msg) }

// SubscribeTyping implements chat.Cluster.
func (s *Status) SubscribeTyping(ctx context.Context, fn func(msg []byte)) error {
	ch := make(chan *nats.Msg, 4096)
	sub, err := s.n.nc.ChanSubscribe(s.typing, ch)
	if err != nil {
		return fmt.Errorf("cluster: subscribe %s: %w", s.typing, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m := <-ch:
			fn(m.Data)
		}
	}
}

// OnNodeDown implements chat.Cluster: fn runs on the node's dispatch
// goroutine for every node declared dead or draining, before the room
// handler's NodeDown; it must not block.
func (n *Node) OnNodeDown(fn func(node string)) {
	n.handlerMu.Lock()
	defer n.handlerMu.Unlock()
	var hooks []func(string)
	if old := n.downHooks.Load(); old != nil {
		hooks = append(hooks, *old...)
	}
	hooks = append(hooks, fn)
	n.downHooks.Store(&hooks)
}

// OnNodeDown implements chat.Cluster.
func (s *Status) OnNodeDown(fn func(node string)) { s.n.OnNodeDown(fn) }
