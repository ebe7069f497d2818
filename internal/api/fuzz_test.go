package api

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/protocol"
)

// FuzzAuthBodies: the generic JSON body decoder (Base.DecodeJSON) and the
// register/login/refresh body checks never panic, fail only with
// bad_request or too_large, and what they accept satisfies the documented
// limits.
func FuzzAuthBodies(f *testing.F) {
	for _, s := range []string{
		`{"username":"alice","password":"password-123"}`,
		`{"username":"alice","password":"password-123","display_name":"Alice"}`,
		`{"username":"alice","password":"password-123","display_name":"  "}`,
		`{"username":"alice","password":"password-123","display_name":null}`,
		`{"username":"a","password":"p"}`,
		`{"username":"alice","password":"password-123","extra":1}`,
		`{"username":"alice","password":"password-123"} {}`,
		`{"refresh_token":"abc"}`,
		`{"refresh_token":123}`,
		`[]`, `null`, ``, `{`, `"x"`,
		`{"username":"` + strings.Repeat("a", 40) + `","password":"` + strings.Repeat("é", 200) + `"}`,
		"{\"username\":\"alice\",\"password\":\"password-123\",\"display_name\":\"a\\u0000b\"}",
		"{\"username\":\"al\xffce\",\"password\":\"pass\xfe-123\"}",
	} {
		f.Add([]byte(s))
	}
	b := &Base{MaxBodySize: 4096}
	f.Fuzz(func(t *testing.T, body []byte) {
		req := func() *httptestRequest { return newReq(body) }
		check := func(err error) {
			if err == nil {
				return
			}
			var pe *protocol.Error
			if !errors.As(err, &pe) || (pe.Code != protocol.CodeBadRequest && pe.Code != protocol.CodeTooLarge) {
				t.Fatalf("error %v", err)
			}
			if pe.Code == protocol.CodeTooLarge && len(body) <= 4096 {
				t.Fatalf("too_large for %d bytes", len(body))
			}
		}
		var rb registerBody
		err := b.DecodeJSON(req().r, &rb)
		check(err)
		if err == nil {
			var display string
			verr := rb.validate(&display)
			check(verr)
			if verr == nil {
				if !validUsername(rb.Username) || utf8.RuneCountInString(rb.Password) < MinPasswordLen ||
					utf8.RuneCountInString(rb.Password) > MaxPasswordLen || display == "" || !validText(display, auth.MaxNameLen) {
					t.Fatalf("accepted %+v display %q", rb, display)
				}
			}
		}
		var lb loginBody
		check(b.DecodeJSON(req().r, &lb))
		var fb refreshBody
		check(b.DecodeJSON(req().r, &fb))
	})
}

type httptestRequest struct{ r *http.Request }

func newReq(body []byte) *httptestRequest {
	return &httptestRequest{r: httptest.NewRequest("POST", "/api/auth/register", bytes.NewReader(body))}
}
