package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/parleyhq/parley/internal/rooms"
)

// leaseValue is a room lease in the <cluster>_rooms KV bucket (JSON),
// under the key roomToken(roomID). The lease's epoch is the entry's KV
// revision, not stored in the value.
type leaseValue struct {
	Node string `json:"node"`
}

func checkRoomID(roomID string) error {
	if roomID == "" {
		return errors.New("cluster: empty room id")
	}
	return nil
}

// Lease implements rooms.Cluster: it reads the key roomToken(roomID) of
// <cluster>_rooms (KV Get). A missing, deleted or purged key is ok=false.
// Errors: NATS or JetStream unavailable, ctx done, a malformed value.
func (n *Node) Lease(ctx context.Context, roomID string) (rooms.Lease, bool, error) {
	if err := checkRoomID(roomID); err != nil {
		return rooms.Lease{}, false, err
	}
	e, err := n.roomsKV.Get(ctx, roomToken(roomID))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return rooms.Lease{}, false, nil
	}
	if err != nil {
		return rooms.Lease{}, false, fmt.Errorf("cluster: read the lease of room %q: %w", roomID, err)
	}
	var v leaseValue
	if err := json.Unmarshal(e.Value(), &v); err != nil || v.Node == "" {
		return rooms.Lease{}, false, fmt.Errorf("cluster: malformed lease of room %q at revision %d", roomID, e.Revision())
	}
	return rooms.Lease{Node: v.Node, Epoch: e.Revision()}, true, nil
}

// Acquire implements rooms.Cluster. With prev nil it creates the lease
// (KV Create: succeeds only when the key is missing or deleted); else it
// replaces *prev (KV Update with prev.Epoch as the expected revision). The
// new lease's epoch is the KV revision of the write: revisions are the
// stream sequence of the bucket, so they grow across create, release and
// create again. A lost compare-and-set is rooms.ErrLeaseTaken; other
// errors are NATS or JetStream failures (the lease is then unknown: read
// it with Lease).
func (n *Node) Acquire(ctx context.Context, roomID string, prev *rooms.Lease) (rooms.Lease, error) {
	if err := checkRoomID(roomID); err != nil {
		return rooms.Lease{}, err
	}
	val, _ := json.Marshal(leaseValue{Node: n.id})
	key := roomToken(roomID)
	var rev uint64
	var err error
	if prev == nil {
		rev, err = n.roomsKV.Create(ctx, key, val)
	} else {
		rev, err = n.roomsKV.Update(ctx, key, val, prev.Epoch)
	}
	if isConflict(err) {
		return rooms.Lease{}, rooms.ErrLeaseTaken
	}
	if err != nil {
		return rooms.Lease{}, fmt.Errorf("cluster: acquire the lease of room %q: %w", roomID, err)
	}
	return rooms.Lease{Node: n.id, Epoch: rev}, nil
}

// Release implements rooms.Cluster: it deletes the lease if it is still l
// (KV Delete with l.Epoch as the last revision); a lease that changed is
// left alone and nil returned. Errors are NATS or JetStream failures.
func (n *Node) Release(ctx context.Context, roomID string, l rooms.Lease) error {
	if err := checkRoomID(roomID); err != nil {
		return err
	}
	err := n.roomsKV.Delete(ctx, roomToken(roomID), jetstream.LastRevision(l.Epoch))
	if err == nil || isConflict(err) {
		return nil
	}
	return fmt.Errorf("cluster: release the lease of room %q: %w", roomID, err)
}

// SendNode implements rooms.Cluster: it publishes msg on
// <cluster>.node.<node>.rooms (core NATS, at most once; no error when the
// node is gone). Errors: an invalid node id, the connection closed, msg
// over the server's max_payload.
func (n *Node) SendNode(node string, msg []byte) error {
	if err := checkNodeID(node); err != nil {
		return err
	}
	if err := n.nc.Publish(n.subj.nodeRooms(node), msg); err != nil {
		return fmt.Errorf("cluster: send to node %q: %w", node, err)
	}
	return nil
}

// PublishRoom implements rooms.Cluster: it publishes msg on
// <cluster>.room.<roomToken(roomID)>, which reaches only the nodes
// subscribed to the room (this one included when it is). Errors as
// SendNode.
func (n *Node) PublishRoom(roomID string, msg []byte) error {
	if err := checkRoomID(roomID); err != nil {
		return err
	}
	if err := n.nc.Publish(n.subj.room(roomID), msg); err != nil {
		return fmt.Errorf("cluster: publish to room %q: %w", roomID, err)
	}
	return nil
}

// SubscribeRoom implements rooms.Cluster: it subscribes the node's inbox
// to <cluster>.room.<roomToken(roomID)> (once, however often it is
// called) and returns after a NATS flush, so the server has the interest.
// Errors: the connection is down or closed, or the flush did not complete
// within 2 s; a subscription made by this call is then removed again.
func (n *Node) SubscribeRoom(roomID string) error {
	if err := checkRoomID(roomID); err != nil {
		return err
	}
	n.roomsMu.Lock()
	sub, existed := n.roomSubs[roomID]
	if !existed {
		var err error
		sub, err = n.nc.ChanSubscribe(n.subj.room(roomID), n.inbox)
		if err != nil {
			n.roomsMu.Unlock()
			return fmt.Errorf("cluster: subscribe to room %q: %w", roomID, err)
		}
		n.roomSubs[roomID] = sub
		n.roomOf[sub] = roomID
	}
	n.roomsMu.Unlock()
	err := n.nc.FlushTimeout(flushTimeout)
	if err == nil {
		return nil
	}
	if !existed {
		n.roomsMu.Lock()
		if n.roomSubs[roomID] == sub {
			delete(n.roomSubs, roomID)
			delete(n.roomOf, sub)
			_ = sub.Unsubscribe()
		}
		n.roomsMu.Unlock()
	}
	return fmt.Errorf("cluster: subscribe to room %q: NATS flush: %w", roomID, err)
}

// UnsubscribeRoom implements rooms.Cluster: it ends the subscription to
// the room (nothing when there is none). Messages of the room already in
// the inbox are dropped, not delivered.
func (n *Node) UnsubscribeRoom(roomID string) error {
	n.roomsMu.Lock()
	defer n.roomsMu.Unlock()
	sub, ok := n.roomSubs[roomID]
	if !ok {
		return nil
	}
	delete(n.roomSubs, roomID)
	delete(n.roomOf, sub)
	if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		return fmt.Errorf("cluster: unsubscribe from room %q: %w", roomID, err)
	}
	return nil
}
