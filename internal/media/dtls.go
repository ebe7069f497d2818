package media

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"time"

	_ "crypto/sha1" // fingerprint algorithms
	_ "crypto/sha256"
	_ "crypto/sha512"

	"github.com/pion/transport/v4/deadline"
)

// DtlsFingerprint is mediasoup's DtlsFingerprint.
type DtlsFingerprint struct {
	Algorithm string `json:"algorithm"`
	Value     string `json:"value"`
}

// DtlsParameters is mediasoup's DtlsParameters.
type DtlsParameters struct {
	Role         string            `json:"role,omitempty"`
	Fingerprints []DtlsFingerprint `json:"fingerprints"`
}

var fingerprintHashes = map[string]crypto.Hash{
	"sha-1":   crypto.SHA1,
	"sha-224": crypto.SHA224,
	"sha-256": crypto.SHA256,
	"sha-384": crypto.SHA384,
	"sha-512": crypto.SHA512,
}

func fingerprint(h crypto.Hash, der []byte) string {
	hh := h.New()
	hh.Write(der)
	sum := hh.Sum(nil)
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = strings.ToUpper(hex.EncodeToString([]byte{b}))
	}
	return strings.Join(parts, ":")
}

func (p *DtlsParameters) validate() error {
	switch p.Role {
	case "", "auto", "client", "server":
	default:
		return fmt.Errorf("dtls_parameters.role must be auto, client or server")
	}
	if len(p.Fingerprints) == 0 || len(p.Fingerprints) > 8 {
		return fmt.Errorf("dtls_parameters.fingerprints needs 1 to 8 entries")
	}
	for _, f := range p.Fingerprints {
		if _, ok := fingerprintHashes[strings.ToLower(f.Algorithm)]; !ok {
			return fmt.Errorf("unsupported fingerprint algorithm %q", f.Algorithm)
		}
		if len(f.Value) == 0 || len(f.Value) > 200 {
			return fmt.Errorf("invalid fingerprint value")
		}
	}
	return nil
}

// verify checks the peer certificate against the signalled fingerprints.
func (p *DtlsParameters) verify(rawCerts [][]byte) error {
	if len(rawCerts) == 0 {
		return errors.New("no peer certificate")
	}
	for _, f := range p.Fingerprints {
		h := fingerprintHashes[strings.ToLower(f.Algorithm)]
		if strings.EqualFold(fingerprint(h, rawCerts[0]), f.Value) {
			return nil
		}
	}
	return errors.New("peer certificate does not match the signalled fingerprint")
}

// certificate is the SFU's DTLS identity (one per SFU, as mediasoup has one
// per worker).
type certificate struct {
	tls    tls.Certificate
	sha256 string
}

func newCertificate() (*certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "parley-sfu"},
		NotBefore:    time.Now().Add(-24 * time.Hour),
		NotAfter:     time.Now().Add(30 * 24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return &certificate{
		tls:    tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		sha256: fingerprint(crypto.SHA256, der),
	}, nil
}

// dtlsEndpoint is the net.PacketConn the DTLS conn runs on: records the
// transport's demuxer routes to it arrive through in; writes go to the ICE
// connection.
type dtlsEndpoint struct {
	in       chan []byte
	write    func([]byte) (int, error)
	local    net.Addr
	remote   net.Addr
	closed   chan struct{}
	once     sync.Once
	deadline *deadline.Deadline
}

func newDTLSEndpoint(write func([]byte) (int, error), local, remote net.Addr) *dtlsEndpoint {
	return &dtlsEndpoint{
		in: make(chan []byte, 256), write: write, local: local, remote: remote,
		closed: make(chan struct{}), deadline: deadline.New(),
	}
}

func (e *dtlsEndpoint) push(b []byte) {
	select {
	case e.in <- append([]byte(nil), b...):
	default: // full: DTLS (and SCTP inside it) retransmit
	}
}

func (e *dtlsEndpoint) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case p := <-e.in:
		return copy(b, p), e.remote, nil
	case <-e.closed:
		return 0, nil, io.EOF
	case <-e.deadline.Done():
		return 0, nil, errTimeout{}
	}
}

func (e *dtlsEndpoint) WriteTo(b []byte, _ net.Addr) (int, error) {
	select {
	case <-e.closed:
		return 0, io.ErrClosedPipe
	default:
	}
	return e.write(b)
}

func (e *dtlsEndpoint) Close() error {
	e.once.Do(func() { close(e.closed) })
	return nil
}

func (e *dtlsEndpoint) LocalAddr() net.Addr                { return e.local }
func (e *dtlsEndpoint) SetDeadline(t time.Time) error      { e.deadline.Set(t); return nil }
func (e *dtlsEndpoint) SetReadDeadline(t time.Time) error  { e.deadline.Set(t); return nil }
func (e *dtlsEndpoint) SetWriteDeadline(_ time.Time) error { return nil }

type errTimeout struct{}

func (errTimeout) Error() string   { return "i/o timeout" }
func (errTimeout) Timeout() bool   { return true }
func (errTimeout) Temporary() bool { return true }
