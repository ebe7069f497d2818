package media

import (
	"fmt"
	"net"
	"runtime"
	"time"

	"github.com/parleyhq/parley/internal/safe"
)

// EmbeddedTURN configures the optional TURN server (pion/turn, UDP) that runs
// inside the process. Credentials follow the TURN REST (shared secret) scheme
// with Config.TURNSharedSecret (a random secret is generated when empty).
type EmbeddedTURN struct {
	Enabled  bool
	ListenIP string // default Config.ListenIP
	Port     int    // 0: 3478; negative: an ephemeral port (tests)
	Realm    string // default "parley"
	RelayIP  string // IP of relay allocations; default the announced IP, or 127.0.0.1
}

// Config configures the SFU. The zero value is usable: one worker per CPU,
// sockets on 0.0.0.0, ephemeral UDP ports, no ICE-TCP, no TURN.
type Config struct {
	Workers int // pool size, default runtime.NumCPU()

	// ListenIP is where the media sockets are bound, default "0.0.0.0".
	ListenIP string
	// AnnouncedIP is the IP put in ICE candidates (a public IP behind NAT).
	// Default: the listen IP, or every non-loopback IPv4 of the machine when
	// listening on 0.0.0.0.
	AnnouncedIP string

	// RTCMinPort..RTCMaxPort is the UDP port range of per-transport sockets
	// (both 0: ephemeral ports). Ignored when UDPMuxPort is set.
	RTCMinPort, RTCMaxPort uint16
	// UDPMuxPort > 0 serves every transport on one shared UDP port.
	UDPMuxPort int
	// TCPPort > 0 also offers, on every transport, a passive ICE-TCP host
	// candidate (RFC 6544) on this one shared TCP port on ListenIP, with a
	// lower priority than the UDP candidates: a fallback for clients whose
	// UDP is blocked. 0 (default): no TCP.
	TCPPort int
	// IncludeLoopback also offers a 127.0.0.1 host candidate (tests, local dev).
	IncludeLoopback bool

	TURNURLs          []string
	TURNUsername      string
	TURNPassword      string
	TURNSharedSecret  string
	TURNCredentialTTL time.Duration // default 24h
	ForceRelay        bool

	EmbeddedTURN EmbeddedTURN

	// Limits (defaults in parentheses).
	MaxProducersPerConnection int // (16)
	MaxConsumersPerConnection int // (512)

	// TransportTimeout: a transport whose ICE/DTLS state stays failed or
	// disconnected this long is closed and its participant leaves the call
	// (30s; negative: never).
	TransportTimeout time.Duration
	// CallIdleTimeout: a call without participants for this long ends on
	// its own, as with EndCall (1m; negative: never).
	CallIdleTimeout time.Duration

	// iceDisconnectedTimeout is the ICE agent's consent timeout before it
	// reports disconnected (15s; tests shorten it).
	iceDisconnectedTimeout time.Duration
	// Data channels (SCTP over each transport's DTLS, PROTOCOL.md section
	// 6). DisableDataChannels turns them off: transports carry no
	// sctpParameters and media:produce_data / media:consume_data answer
	// unsupported.
	DisableDataChannels bool
	// MaxDataMessageSize is the largest data channel message, announced as
	// sctpParameters.maxMessageSize (262144, at most 1 MiB). A data
	// producer that sends a larger one is closed.
	MaxDataMessageSize int
	// DataSendBuffer bounds the bytes waiting to be sent to one data
	// consumer (queued before its association is up, or sent and not yet
	// acknowledged); a message that would exceed it is dropped for that
	// consumer and counted (1 MiB; at least MaxDataMessageSize).
	DataSendBuffer                int
	MaxDataProducersPerConnection int // (16)
	MaxDataConsumersPerConnection int // (256; at most 1024, the SCTP streams of a transport)

	// Panics counts panics contained in the SFU's goroutines (a
	// *metrics.Metrics); nil: logged only.
	Panics safe.Counter

	// interfaceAddrs lists the machine's addresses (default
	// net.InterfaceAddrs); tests inject a host without a routable IPv4.
	interfaceAddrs func() ([]net.Addr, error)
}

func (c *Config) withDefaults() (Config, error) {
	out := *c
	if out.Workers <= 0 {
		out.Workers = runtime.NumCPU()
	}
	if out.ListenIP == "" {
		out.ListenIP = "0.0.0.0"
	}
	if net.ParseIP(out.ListenIP) == nil {
		return out, fmt.Errorf("media: invalid listen IP %q", out.ListenIP)
	}
	if out.AnnouncedIP != "" && net.ParseIP(out.AnnouncedIP) == nil {
		return out, fmt.Errorf("media: invalid announced IP %q", out.AnnouncedIP)
	}
	if out.RTCMinPort > out.RTCMaxPort || (out.RTCMinPort == 0) != (out.RTCMaxPort == 0) {
		return out, fmt.Errorf("media: invalid RTC port range %d-%d", out.RTCMinPort, out.RTCMaxPort)
	}
	if out.UDPMuxPort < 0 || out.UDPMuxPort > 65535 {
		return out, fmt.Errorf("media: invalid UDP mux port %d", out.UDPMuxPort)
	}
	if out.TCPPort < 0 || out.TCPPort > 65535 {
		return out, fmt.Errorf("media: invalid TCP port %d", out.TCPPort)
	}
	if out.TURNCredentialTTL <= 0 {
		out.TURNCredentialTTL = 24 * time.Hour
	}
	if out.MaxProducersPerConnection <= 0 {
		out.MaxProducersPerConnection = 16
	}
	if out.MaxConsumersPerConnection <= 0 {
		out.MaxConsumersPerConnection = 512
	}
	if out.TransportTimeout == 0 {
		out.TransportTimeout = 30 * time.Second
	}
	if out.CallIdleTimeout == 0 {
		out.CallIdleTimeout = time.Minute
	}
	if out.iceDisconnectedTimeout <= 0 {
		out.iceDisconnectedTimeout = 15 * time.Second
	}
	if out.MaxDataMessageSize <= 0 {
		out.MaxDataMessageSize = 256 << 10
	}
	if out.MaxDataMessageSize > 1<<20 {
		return out, fmt.Errorf("media: data message size %d is over 1 MiB", out.MaxDataMessageSize)
	}
	if out.DataSendBuffer <= 0 {
		out.DataSendBuffer = 1 << 20
	}
	if out.DataSendBuffer < out.MaxDataMessageSize {
		return out, fmt.Errorf("media: data send buffer %d is smaller than the data message size %d", out.DataSendBuffer, out.MaxDataMessageSize)
	}
	if out.MaxDataProducersPerConnection <= 0 {
		out.MaxDataProducersPerConnection = 16
	}
	if out.MaxDataConsumersPerConnection <= 0 {
		out.MaxDataConsumersPerConnection = 256
	}
	if out.MaxDataConsumersPerConnection > sctpNumStreams {
		out.MaxDataConsumersPerConnection = sctpNumStreams
	}
	t := &out.EmbeddedTURN
	if t.Enabled {
		if t.ListenIP == "" {
			t.ListenIP = out.ListenIP
		}
		if t.Realm == "" {
			t.Realm = "parley"
		}
		if t.RelayIP == "" {
			switch {
			case out.AnnouncedIP != "":
				t.RelayIP = out.AnnouncedIP
			case !net.ParseIP(out.ListenIP).IsUnspecified():
				t.RelayIP = out.ListenIP
			default:
				t.RelayIP = "127.0.0.1"
			}
		}
		if net.ParseIP(t.RelayIP) == nil || net.ParseIP(t.ListenIP) == nil {
			return out, fmt.Errorf("media: invalid embedded TURN IPs")
		}
	}
	return out, nil
}
