package api

import (
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/parleyhq/parley/internal/protocol"
)

// WriteLimit wraps the REST API: POST, PATCH and DELETE requests under
// /api/ are limited per user (token subject), or per client IP when the
// request carries no valid token, with a token bucket (config rest-rate,
// rest-burst). Requests with the server API key and the /api/auth/
// endpoints (which have their own login limit) are not counted. Over the
// limit: 429 rate_limited, and the handler never runs.
func (b *Base) WriteLimit(lim *LoginLimiter, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead || r.Method == http.MethodOptions ||
			!strings.HasPrefix(r.URL.Path, "/api/") || strings.HasPrefix(r.URL.Path, "/api/auth/") {
			next.ServeHTTP(w, r)
			return
		}
		key := "ip:" + IPKey(ClientIP(r))
		if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
			cred := strings.TrimSpace(h[7:])
			if b.APIKey != "" && subtle.ConstantTimeCompare([]byte(cred), []byte(b.APIKey)) == 1 {
				next.ServeHTTP(w, r)
				return
			}
			if c, err := b.Verifier.Verify(cred); err == nil {
				key = "user:" + c.UserID
			}
		}
		if !lim.AllowKey(key) {
			w.Header().Set("Retry-After", "1")
			Error(w, protocol.Errorf(protocol.CodeRateLimited, "too many requests; slow down"))
			return
		}
		next.ServeHTTP(w, r)
	})
}
