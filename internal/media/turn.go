package media

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // the TURN REST credential scheme is HMAC-SHA1
	"encoding/base64"
	"fmt"
	"net"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/pion/turn/v5"

	"github.com/parleyhq/parley/internal/safe"
)

// IceServer is an RTCIceServer as the browser takes it.
type IceServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// TURNCredentials returns coturn REST-scheme credentials for userID:
// username "<unix_expiry>:<user_id>", credential
// base64(HMAC-SHA1(secret, username)).
func TURNCredentials(secret, userID string, ttl time.Duration, now time.Time) (username, credential string) {
	username = strconv.FormatInt(now.Add(ttl).Unix(), 10) + ":" + userID
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(username))
	return username, base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// iceServers builds the ice_servers list for a user from the config.
func (s *SFU) iceServers(userID string) []IceServer {
	out := []IceServer{}
	if len(s.cfg.TURNURLs) > 0 {
		srv := IceServer{URLs: append([]string(nil), s.cfg.TURNURLs...)}
		switch {
		case s.cfg.TURNSharedSecret != "":
			srv.Username, srv.Credential = TURNCredentials(s.cfg.TURNSharedSecret, userID, s.cfg.TURNCredentialTTL, time.Now())
		case s.cfg.TURNUsername != "":
			srv.Username, srv.Credential = s.cfg.TURNUsername, s.cfg.TURNPassword
		}
		out = append(out, srv)
	}
	if s.turnServer != nil {
		u, c := TURNCredentials(s.turnSecret, userID, s.cfg.TURNCredentialTTL, time.Now())
		out = append(out, IceServer{URLs: s.turnURLs, Username: u, Credential: c})
	}
	return out
}

// TURNAddr returns the embedded TURN server's UDP address, or nil.
func (s *SFU) TURNAddr() *net.UDPAddr {
	if s.turnServer == nil {
		return nil
	}
	return s.turnAddr
}

func (s *SFU) startTURN() error {
	tc := s.cfg.EmbeddedTURN
	if !tc.Enabled {
		return nil
	}
	s.turnSecret = s.cfg.TURNSharedSecret
	if s.turnSecret == "" {
		s.turnSecret = randString(32)
	}
	port := tc.Port
	switch {
	case port == 0:
		port = 3478
	case port < 0:
		port = 0 // ephemeral (tests)
	}
	pc, err := net.ListenPacket("udp4", net.JoinHostPort(tc.ListenIP, strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("media: embedded TURN listen: %w", err)
	}
	srv, err := turn.NewServer(turn.ServerConfig{
		Realm:         tc.Realm,
		AuthHandler:   s.recoveringAuth(turn.LongTermTURNRESTAuthHandler(s.turnSecret, s.lf.NewLogger("turn"))),
		LoggerFactory: s.lf,
		PacketConnConfigs: []turn.PacketConnConfig{{
			PacketConn: pc,
			RelayAddressGenerator: &turn.RelayAddressGeneratorStatic{
				RelayAddress: net.ParseIP(tc.RelayIP),
				Address:      relayBindAddr(tc),
			},
		}},
	})
	if err != nil {
		_ = pc.Close()
		return fmt.Errorf("media: embedded TURN: %w", err)
	}
	s.turnServer = srv
	addr := pc.LocalAddr().(*net.UDPAddr)
	s.turnAddr = addr
	host := tc.RelayIP
	if ip := net.ParseIP(tc.ListenIP); ip != nil && !ip.IsUnspecified() {
		host = tc.ListenIP
	} else if s.cfg.AnnouncedIP != "" {
		host = s.cfg.AnnouncedIP
	}
	s.turnURLs = []string{fmt.Sprintf("turn:%s?transport=udp", net.JoinHostPort(host, strconv.Itoa(addr.Port)))}
	return nil
}

// recoveringAuth wraps the TURN server's credential check, the only code
// of ours that pion/turn runs on its node-wide read loop: a panic there is
// logged and counted (safe.MediaTransport) and the request is refused
// instead of killing the process.
func (s *SFU) recoveringAuth(h turn.AuthHandler) turn.AuthHandler {
	return func(ra *turn.RequestAttributes) (userID string, key []byte, ok bool) {
		defer func() {
			if v := recover(); v != nil {
				safe.Report(s.log, s.cfg.Panics, safe.MediaTransport, v, debug.Stack())
				userID, key, ok = "", nil, false
			}
		}()
		return h(ra)
	}
}

func relayBindAddr(tc EmbeddedTURN) string {
	if ip := net.ParseIP(tc.ListenIP); ip != nil && !ip.IsUnspecified() {
		return tc.ListenIP
	}
	return "0.0.0.0"
}

type atomicCounter struct{ v atomic.Uint64 }

func (c *atomicCounter) next() uint64 { return c.v.Add(1) }
