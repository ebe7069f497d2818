package cluster

import (
	"github.com/parleyhq/parley/internal/hub"
)

// Broker fans an encoded frame out to connections wherever they are. The
// frame is encoded once by the caller and must not be modified afterwards.
// Methods never block on a slow client.
type Broker interface {
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

// ToUsers implements Broker.
func (l *Local) ToUsers(userIDs []string, frame []byte, exceptConn string) {
	l.hub.SendToUsers(userIDs, frame, exceptConn)
}

// ToAll implements Broker.
func (l *Local) ToAll(frame []byte, exceptConn string) { l.hub.SendAll(frame, exceptConn) }

// Close implements Broker.
func (l *Local) Close() error { return nil }
