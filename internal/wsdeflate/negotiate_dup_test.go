package wsdeflate

import "testing"

// RFC 7692 §7: a server MUST decline an offer that "contains multiple
// extension parameters with the same name". Two slip through: wsflate's
// Parameters.Parse skips its duplicate check for a value-less
// client_max_window_bits, and withoutFullServerWindow removes every
// server_max_window_bits=15, so a repeated one is never seen by wsflate's
// duplicate check. docs/protocol.md says parameters that do not parse
// (RFC 7692 §7.1) are declined.
func TestNegotiateDeclinesDuplicateParameters(t *testing.T) {
	for _, offer := range []string{
		"permessage-deflate; client_max_window_bits; client_max_window_bits",
		"permessage-deflate; client_max_window_bits=10; client_max_window_bits",
		"permessage-deflate; client_max_window_bits; client_max_window_bits=10",
		"permessage-deflate; server_max_window_bits=15; server_max_window_bits=15",
	} {
		n := NewNegotiator()
		resp, err := n.Negotiate(opt(t, offer))
		if err != nil {
			t.Fatalf("%q: error %v (must decline, not fail)", offer, err)
		}
		if resp.Size() != 0 || n.Accepted() {
			t.Errorf("%q: accepted (%s), want declined: duplicate parameter", offer, resp.String())
		}
	}
}
