package rooms

import (
	"context"
	"errors"
)

// Lease is a room's ownership in a cluster: the node that orders the room
// (membership, presence, storage versions, broadcasts) and the epoch of its
// tenure. Epochs only grow for a room (the cluster package uses the NATS KV
// revision of the lease key), so the store can refuse a commit from an
// owner that lost the room (a fencing token: store.DocUpdate.Epoch,
// store.ErrFenced).
type Lease struct {
	Node  string
	Epoch uint64
}

// ErrLeaseTaken is returned by Cluster.Acquire when another node changed
// the lease first (the compare-and-set lost); read it again with Lease.
var ErrLeaseTaken = errors.New("rooms: room lease taken by another node")

// Cluster is what rooms needs from the other nodes of a cluster
// (implemented over NATS by internal/cluster). A Manager without one is a
// single node: it owns every room.
//
// Delivery contract: the implementation calls the ClusterHandler installed
// with SetHandler from ONE goroutine, in the order its connection received
// the messages, so that a node's messages sent with SendNode and its
// publications with PublishRoom reach every other node in the order that
// node sent them (a join's reply is never overtaken by a later room event).
// Messages are at-most-once: a lost one shows as a gap in a room's
// sequence numbers, or as a Resync after a reconnect.
type Cluster interface {
	// NodeID is this node's id.
	NodeID() string
	// SetHandler installs the receiver of this node's room traffic; it is
	// called once, before any other method.
	SetHandler(h ClusterHandler)

	// Lease returns roomID's current lease; ok is false when no node holds
	// it.
	Lease(ctx context.Context, roomID string) (l Lease, ok bool, err error)
	// Acquire makes this node the owner of roomID: when prev is nil only if
	// no lease exists, else only if the lease is still *prev (compare and
	// set). It returns the new lease (Node is this node, Epoch greater than
	// every earlier epoch of the room) or ErrLeaseTaken.
	Acquire(ctx context.Context, roomID string, prev *Lease) (Lease, error)
	// Release deletes roomID's lease if it is still l; otherwise it does
	// nothing and returns nil.
	Release(ctx context.Context, roomID string, l Lease) error
	// Alive reports whether node is registered, heartbeating and not
	// draining (so it may hold rooms).
	Alive(node string) bool

	// SendNode sends msg to node's room handler (ClusterHandler.NodeMessage).
	SendNode(node string, msg []byte) error
	// PublishRoom sends msg to every node subscribed to roomID
	// (ClusterHandler.RoomMessage), this node included when subscribed.
	PublishRoom(roomID string, msg []byte) error
	// SubscribeRoom starts this node's subscription to roomID's
	// publications; it returns once the NATS server has the interest, so a
	// request sent afterwards cannot be answered by a publication this node
	// misses. Subscribing twice is one subscription.
	SubscribeRoom(roomID string) error
	// UnsubscribeRoom ends it.
	UnsubscribeRoom(roomID string) error
}

// ClusterHandler receives a node's room traffic (Manager implements it).
type ClusterHandler interface {
	// NodeMessage is a message another node sent to this one (SendNode).
	NodeMessage(msg []byte)
	// RoomMessage is a publication on a room this node subscribed to.
	RoomMessage(roomID string, msg []byte)
	// NodeDown reports a node that stopped heartbeating (declared dead) or
	// announced a drain: the rooms it owned need a new owner and its
	// clients have left.
	NodeDown(node string)
	// Resync reports that messages may have been lost (the NATS connection
	// was re-established): every room with local clients is re-read from
	// its owner and its clients get a fresh room:state.
	Resync()
}
