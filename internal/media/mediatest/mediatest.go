// Package mediatest is a minimal WebRTC client for tests outside
// internal/media that need real media through the SFU (the server's wire
// golden test sends audio to capture media:active_speaker and simulcast
// video to capture media:consumer_layers_changed): a full pion ICE agent
// (controlling, loopback host candidates, UDP), a DTLS client with a
// self-signed certificate, and SRTP to send RTP. It receives nothing but
// DTLS (on a recv transport, the media it is sent is read and dropped).
package mediatest

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/crypto/fingerprint"
	"github.com/pion/dtls/v3/pkg/crypto/selfsign"
	"github.com/pion/ice/v4"
	"github.com/pion/logging"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/pion/transport/v4/deadline"

	"github.com/parleyhq/parley/internal/media"
)

// Client is one client transport (a send transport: it sends RTP).
type Client struct {
	info  media.TransportInfo
	agent *ice.Agent
	cert  tls.Certificate
	fp    string

	conn *ice.Conn
	dc   *dtls.Conn
	pipe *dtlsPipe
	wg   sync.WaitGroup

	mu  sync.Mutex
	enc *srtp.Context
}

// New prepares a client for the server transport info (its loopback UDP
// candidates).
func New(info media.TransportInfo) (*Client, error) {
	cert, err := selfsign.GenerateSelfSigned()
	if err != nil {
		return nil, err
	}
	x, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, err
	}
	fp, err := fingerprint.Fingerprint(x, crypto.SHA256)
	if err != nil {
		return nil, err
	}
	agent, err := ice.NewAgentWithOptions(
		ice.WithNetworkTypes([]ice.NetworkType{ice.NetworkTypeUDP4}),
		ice.WithCandidateTypes([]ice.CandidateType{ice.CandidateTypeHost}),
		ice.WithMulticastDNSMode(ice.MulticastDNSModeDisabled),
		ice.WithIncludeLoopback(),
		ice.WithCheckInterval(20*time.Millisecond),
		ice.WithInterfaceFilter(func(name string) bool { return name == "lo" }),
		ice.WithLoggerFactory(quietLogs()),
	)
	if err != nil {
		return nil, err
	}
	c := &Client{info: info, agent: agent, cert: cert, fp: strings.ToUpper(fp)}
	if err := agent.OnCandidate(func(ice.Candidate) {}); err != nil {
		return nil, c.closeErr(err)
	}
	if err := agent.GatherCandidates(); err != nil {
		return nil, c.closeErr(err)
	}
	n := 0
	for _, rc := range info.IceCandidates {
		if rc.IP != "127.0.0.1" || rc.Protocol != "udp" {
			continue
		}
		cand, err := ice.NewCandidateHost(&ice.CandidateHostConfig{
			Network: "udp", Address: rc.IP, Port: rc.Port, Component: 1, Priority: rc.Priority,
		})
		if err != nil {
			return nil, c.closeErr(err)
		}
		if err := agent.AddRemoteCandidate(cand); err != nil {
			return nil, c.closeErr(err)
		}
		n++
	}
	if n == 0 {
		return nil, c.closeErr(errors.New("mediatest: the transport offers no 127.0.0.1 UDP candidate (media loopback off?)"))
	}
	return c, nil
}

// NewJSON is New for a transport as media:transport_created carries it
// (its raw JSON).
func NewJSON(raw json.RawMessage) (*Client, error) {
	var info media.TransportInfo
	if err := json.Unmarshal(raw, &info); err != nil {
		return nil, err
	}
	return New(info)
}

func (c *Client) closeErr(err error) error {
	_ = c.agent.Close()
	return err
}

// DtlsParameters are the client's, for media:connect_transport.
func (c *Client) DtlsParameters() media.DtlsParameters {
	return media.DtlsParameters{Role: "client", Fingerprints: []media.DtlsFingerprint{{Algorithm: "sha-256", Value: c.fp}}}
}

// ID is the server transport's id.
func (c *Client) ID() string { return c.info.ID }

// DTLSParameters is DtlsParameters as a JSON object.
func (c *Client) DTLSParameters() map[string]any {
	return map[string]any{"role": "client", "fingerprints": []map[string]string{{"algorithm": "sha-256", "value": c.fp}}}
}

// Connect runs ICE and the DTLS handshake (after media:connect_transport)
// and sets up SRTP.
func (c *Client) Connect(ctx context.Context) error {
	p := c.info.IceParameters
	conn, err := c.agent.Dial(ctx, p.UsernameFragment, p.Password)
	if err != nil {
		return fmt.Errorf("mediatest: ice: %w", err)
	}
	c.conn = conn
	c.pipe = newDTLSPipe(conn)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.pipe.readLoop()
	}()
	want := ""
	for _, f := range c.info.DtlsParameters.Fingerprints {
		if strings.EqualFold(f.Algorithm, "sha-256") {
			want = strings.ToUpper(f.Value)
		}
	}
	dc, err := dtls.ClientWithOptions(c.pipe, c.pipe.remote,
		dtls.WithCertificates(c.cert),
		dtls.WithSRTPProtectionProfiles(dtls.SRTP_AEAD_AES_128_GCM, dtls.SRTP_AES128_CM_HMAC_SHA1_80),
		dtls.WithInsecureSkipVerify(true),
		dtls.WithVerifyPeerCertificate(func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("no certificate")
			}
			x, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			got, err := fingerprint.Fingerprint(x, crypto.SHA256)
			if err != nil || !strings.EqualFold(got, want) {
				return fmt.Errorf("fingerprint %s, want %s", got, want)
			}
			return nil
		}))
	if err != nil {
		return err
	}
	c.dc = dc
	if err := dc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("mediatest: dtls: %w", err)
	}
	enc, _, err := media.SRTPContexts(dc, true)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.enc = enc
	c.mu.Unlock()
	return nil
}

// WriteRTP encrypts and sends one packet.
func (c *Client) WriteRTP(p *rtp.Packet) error {
	raw, err := p.Marshal()
	if err != nil {
		return err
	}
	c.mu.Lock()
	enc := c.enc
	var out []byte
	if enc != nil {
		out, err = enc.EncryptRTP(nil, raw, nil)
	}
	c.mu.Unlock()
	if enc == nil {
		return errors.New("mediatest: not connected")
	}
	if err != nil {
		return err
	}
	_, err = c.conn.Write(out)
	return err
}

// Close tears the client down and waits for its goroutine.
func (c *Client) Close() {
	if c.dc != nil {
		_ = c.dc.Close()
	}
	if c.pipe != nil {
		c.pipe.close()
	}
	_ = c.agent.GracefulClose()
	c.wg.Wait()
}

// dtlsPipe is the net.PacketConn DTLS runs on: the ICE connection's DTLS
// records (first byte 20-63, RFC 7983); everything else read is dropped.
type dtlsPipe struct {
	conn     *ice.Conn
	remote   net.Addr
	in       chan []byte
	done     chan struct{}
	closed   sync.Once
	deadline *deadline.Deadline
}

func newDTLSPipe(conn *ice.Conn) *dtlsPipe {
	return &dtlsPipe{conn: conn, remote: conn.RemoteAddr(), in: make(chan []byte, 64), done: make(chan struct{}),
		deadline: deadline.New()}
}

func (p *dtlsPipe) readLoop() {
	buf := make([]byte, 1600)
	for {
		n, err := p.conn.Read(buf)
		if err != nil {
			p.close()
			return
		}
		if n > 0 && buf[0] >= 20 && buf[0] <= 63 {
			select {
			case p.in <- append([]byte(nil), buf[:n]...):
			default: // DTLS retransmits
			}
		}
	}
}

func (p *dtlsPipe) close() { p.closed.Do(func() { close(p.done) }) }

func (p *dtlsPipe) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case m := <-p.in:
		return copy(b, m), p.remote, nil
	case <-p.done:
		return 0, nil, net.ErrClosed
	case <-p.deadline.Done():
		return 0, nil, timeoutErr{}
	}
}

func (p *dtlsPipe) WriteTo(b []byte, _ net.Addr) (int, error) { return p.conn.Write(b) }
func (p *dtlsPipe) Close() error                              { p.close(); return nil }
func (p *dtlsPipe) LocalAddr() net.Addr                       { return p.conn.LocalAddr() }
func (p *dtlsPipe) SetDeadline(t time.Time) error             { p.deadline.Set(t); return nil }
func (p *dtlsPipe) SetReadDeadline(t time.Time) error         { p.deadline.Set(t); return nil }
func (p *dtlsPipe) SetWriteDeadline(time.Time) error          { return nil }

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func quietLogs() logging.LoggerFactory {
	f := logging.NewDefaultLoggerFactory()
	f.DefaultLogLevel = logging.LogLevelDisabled
	return f
}
