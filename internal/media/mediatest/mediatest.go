// Package mediatest is a minimal WebRTC endpoint for tests outside package
// media (the server's wire golden test): a full ICE agent (controlling) on
// loopback, a DTLS client and SRTP for sending, against one transport of
// media:transport_created. Incoming media and RTCP are not read (the DTLS
// connection sees and drops them). Package media's own tests use their
// richer client (testclient_test.go).
package mediatest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"time"

	"github.com/pion/dtls/v3"
	dtlsnet "github.com/pion/dtls/v3/pkg/net"
	"github.com/pion/ice/v4"
	"github.com/pion/logging"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

// Transport is the part of a transport of media:transport_created the
// client needs (mediasoup's shapes).
type Transport struct {
	ID            string `json:"id"`
	IceParameters struct {
		UsernameFragment string `json:"usernameFragment"`
		Password         string `json:"password"`
	} `json:"iceParameters"`
	IceCandidates []struct {
		IP       string `json:"ip"`
		Port     int    `json:"port"`
		Protocol string `json:"protocol"`
		Priority uint32 `json:"priority"`
	} `json:"iceCandidates"`
	DtlsParameters struct {
		Fingerprints []struct {
			Algorithm string `json:"algorithm"`
			Value     string `json:"value"`
		} `json:"fingerprints"`
	} `json:"dtlsParameters"`
}

// Client is one connected transport.
type Client struct {
	info  Transport
	cert  tls.Certificate
	fp    string
	agent *ice.Agent
	conn  *ice.Conn
	dc    *dtls.Conn
	mu    sync.Mutex
	enc   *srtp.Context
}

// New prepares a client for a transport (raw: its JSON); DTLSParameters
// is then sent with media:connect_transport before Connect.
func New(raw json.RawMessage) (*Client, error) {
	c := &Client{}
	if err := json.Unmarshal(raw, &c.info); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mediatest"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	c.cert = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	c.fp = fingerprint(der)
	return c, nil
}

func fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

// DTLSParameters is the client's dtls_parameters for media:connect_transport.
func (c *Client) DTLSParameters() map[string]any {
	return map[string]any{"role": "client", "fingerprints": []map[string]string{{"algorithm": "sha-256", "value": c.fp}}}
}

type quiet struct{}

func (quiet) NewLogger(string) logging.LeveledLogger {
	return logging.NewDefaultLeveledLoggerForScope("", logging.LogLevelDisabled, nil)
}

// Connect runs ICE to the transport's loopback UDP candidate, then DTLS
// (the server's certificate must match its fingerprint), and sets up SRTP.
func (c *Client) Connect(ctx context.Context) error {
	agent, err := ice.NewAgentWithOptions(
		ice.WithNetworkTypes([]ice.NetworkType{ice.NetworkTypeUDP4}),
		ice.WithCandidateTypes([]ice.CandidateType{ice.CandidateTypeHost}),
		ice.WithMulticastDNSMode(ice.MulticastDNSModeDisabled),
		ice.WithIncludeLoopback(),
		ice.WithCheckInterval(20*time.Millisecond),
		ice.WithInterfaceFilter(func(name string) bool { return name == "lo" }),
		ice.WithLoggerFactory(quiet{}),
	)
	if err != nil {
		return err
	}
	c.agent = agent
	if err := agent.OnCandidate(func(ice.Candidate) {}); err != nil {
		return err
	}
	if err := agent.GatherCandidates(); err != nil {
		return err
	}
	found := false
	for _, rc := range c.info.IceCandidates {
		if rc.IP != "127.0.0.1" || rc.Protocol != "udp" {
			continue
		}
		cand, err := ice.NewCandidateHost(&ice.CandidateHostConfig{Network: "udp", Address: rc.IP, Port: rc.Port, Component: 1, Priority: rc.Priority})
		if err != nil {
			return err
		}
		if err := agent.AddRemoteCandidate(cand); err != nil {
			return err
		}
		found = true
	}
	if !found {
		return fmt.Errorf("transport %s has no 127.0.0.1 UDP candidate", c.info.ID)
	}
	conn, err := agent.Dial(ctx, c.info.IceParameters.UsernameFragment, c.info.IceParameters.Password)
	if err != nil {
		return fmt.Errorf("ice: %w", err)
	}
	c.conn = conn
	if len(c.info.DtlsParameters.Fingerprints) == 0 {
		return fmt.Errorf("transport %s has no fingerprint", c.info.ID)
	}
	want := strings.ToUpper(c.info.DtlsParameters.Fingerprints[0].Value)
	dc, err := dtls.ClientWithOptions(dtlsnet.PacketConnFromConn(conn), conn.RemoteAddr(),
		dtls.WithCertificates(c.cert),
		dtls.WithSRTPProtectionProfiles(dtls.SRTP_AEAD_AES_128_GCM, dtls.SRTP_AES128_CM_HMAC_SHA1_80),
		dtls.WithInsecureSkipVerify(true),
		dtls.WithVerifyPeerCertificate(func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 || fingerprint(raw[0]) != want {
				return fmt.Errorf("server certificate does not match its fingerprint")
			}
			return nil
		}),
		dtls.WithLoggerFactory(quiet{}))
	if err != nil {
		return err
	}
	c.dc = dc
	if err := dc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("dtls: %w", err)
	}
	state, _ := dc.ConnectionState()
	dp, _ := dc.SelectedSRTPProtectionProfile()
	profile := srtp.ProtectionProfileAes128CmHmacSha1_80
	if dp == dtls.SRTP_AEAD_AES_128_GCM {
		profile = srtp.ProtectionProfileAeadAes128Gcm
	}
	cfg := srtp.Config{Profile: profile}
	if err := cfg.ExtractSessionKeysFromDTLS(&state, true); err != nil {
		return err
	}
	enc, err := srtp.CreateContext(cfg.Keys.LocalMasterKey, cfg.Keys.LocalMasterSalt, profile)
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
		return fmt.Errorf("not connected")
	}
	if err != nil {
		return err
	}
	_, err = c.conn.Write(out)
	return err
}

// Close ends DTLS and ICE.
func (c *Client) Close() {
	if c.dc != nil {
		_ = c.dc.Close()
	}
	if c.agent != nil {
		_ = c.agent.GracefulClose()
	}
}
