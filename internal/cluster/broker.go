// Package cluster is the seam between one node and many: every delivery that
// may concern connections on other nodes (a user's connections, a set of
// users, everyone) goes through a Broker. Local delivers in-process (the
// embedded default); NATS also publishes to the other nodes, which deliver to
// their own connections. Handlers depend only on the interface.
package cluster

import (
	"github.com/parleyhq/parley/internal/hub"
)

// Broker fans an encoded frame out to connections wherever they are. The
// frame is encoded once by the caller and must not be modified afterwards.
// Methods never block on a slow client.
type Broker interface {
	// ToConn delivers to one connection.
	ToConn(connID string, frame []byte)
	// ToUsers delivers to every connection of each listed user, except the
	// connection named by exceptConn ("" for none).
	ToUsers(userIDs []string, frame []byte, exceptConn string)
	// ToAll delivers to every connection, except exceptConn.
	ToAll(frame []byte, exceptConn string)
	// Close releases the broker's resources.
	Close() error
}

// Local is the in-process broker: it delivers straight to the hub.
type Local struct{ hub *hub.Hub }

// NewLocal returns a broker over h.
func NewLocal(h *hub.Hub) *Local { return &Local{hub: h} }

// ToConn implements Broker.
func (l *Local) ToConn(connID string, frame []byte) { l.hub.SendToConn(connID, frame) }

// ToUsers implements Broker.
func (l *Local) ToUsers(userIDs []string, frame []byte, exceptConn string) {
	l.hub.SendToUsers(userIDs, frame, exceptConn)
}

// ToAll implements Broker.
func (l *Local) ToAll(frame []byte, exceptConn string) { l.hub.SendAll(frame, exceptConn) }

// Close implements Broker.
func (l *Local) Close() error { return nil }
