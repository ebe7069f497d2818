package api

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"golang.org/x/time/rate"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/store"
)

// Accounts serves registration, login, refresh-token rotation, logout and
// GET /api/me. Access tokens are the same JWTs the WebSocket takes.
type Accounts struct {
	*Base
	Store      store.Store
	Signer     *auth.Signer // nil when no HS256 secret is configured: accounts are disabled
	AccessTTL  time.Duration
	RefreshTTL time.Duration
	// Login attempts are limited per client IP and per username.
	Limiter *LoginLimiter
}

// Register adds the routes to mux.
func (h *Accounts) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/auth/register", h.register)
	mux.HandleFunc("POST /api/auth/login", h.login)
	mux.HandleFunc("POST /api/auth/refresh", h.refresh)
	mux.HandleFunc("POST /api/auth/logout", h.logout)
	mux.HandleFunc("GET /api/me", h.me)
}

// Account limits.
const (
	MinUsernameLen = 3
	MaxUsernameLen = 32
	MinPasswordLen = 8
	MaxPasswordLen = 128
)

// UserJSON is a user in REST answers.
type UserJSON struct {
	ID          string `json:"id"`
	Username    string `json:"username"`
	DisplayName string `json:"display_name"`
}

// TokenPair is the answer of register, login and refresh.
type TokenPair struct {
	AccessToken  string   `json:"access_token"`
	RefreshToken string   `json:"refresh_token"`
	ExpiresIn    int64    `json:"expires_in"` // seconds until the access token expires
	User         UserJSON `json:"user"`
}

var errBadLogin = protocol.Errorf(protocol.CodeUnauthorized, "invalid username or password")

func validUsername(u string) bool {
	if len(u) < MinUsernameLen || len(u) > MaxUsernameLen {
		return false
	}
	for i := 0; i < len(u); i++ {
		c := u[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '.', c == '-':
		default:
			return false
		}
	}
	return true
}

// validText checks a free text field: at most max characters, no control
// characters.
func validText(s string, max int) bool {
	return utf8.ValidString(s) && utf8.RuneCountInString(s) <= max && strings.IndexFunc(s, unicode.IsControl) < 0
}

func (h *Accounts) enabled() error {
	if h.Signer == nil {
		return protocol.Errorf(protocol.CodeForbidden, "accounts are disabled: the server has no auth-secret to sign tokens with")
	}
	return nil
}

type registerBody struct {
	Username    string  `json:"username"`
	Password    string  `json:"password"`
	DisplayName *string `json:"display_name"`
}

func (h *Accounts) register(w http.ResponseWriter, r *http.Request) {
	if err := h.enabled(); err != nil {
		Error(w, err)
		return
	}
	var b registerBody
	if err := h.DecodeJSON(r, &b); err != nil {
		Error(w, err)
		return
	}
	if !validUsername(b.Username) {
		Error(w, protocol.Errorf(protocol.CodeBadRequest, "username must be %d-%d characters of [a-z0-9_.-]", MinUsernameLen, MaxUsernameLen))
		return
	}
	if n := utf8.RuneCountInString(b.Password); n < MinPasswordLen || n > MaxPasswordLen {
		Error(w, protocol.Errorf(protocol.CodeBadRequest, "password must be %d-%d characters", MinPasswordLen, MaxPasswordLen))
		return
	}
	display := b.Username
	if b.DisplayName != nil {
		display = strings.TrimSpace(*b.DisplayName)
		if display == "" || !validText(display, auth.MaxNameLen) {
			Error(w, protocol.Errorf(protocol.CodeBadRequest, "display_name must be 1-%d characters without control characters", auth.MaxNameLen))
			return
		}
	}
	hash, err := auth.HashPassword(b.Password)
	if err != nil {
		Error(w, h.Internal(err, "hash password"))
		return
	}
	u := store.User{ID: uuid.NewString(), Username: b.Username, DisplayName: display, PasswordHash: hash,
		CreatedAt: time.Now().UTC().Truncate(time.Millisecond)}
	if err := h.Store.CreateUser(r.Context(), u); errors.Is(err, store.ErrConflict) {
		Error(w, protocol.Errorf(protocol.CodeConflict, "username %s is taken", b.Username))
		return
	} else if err != nil {
		Error(w, h.Internal(err, "create user"))
		return
	}
	pair, err := h.issue(r.Context(), u)
	if err != nil {
		Error(w, err)
		return
	}
	WriteJSON(w, http.StatusCreated, pair)
}

type loginBody struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

func (h *Accounts) login(w http.ResponseWriter, r *http.Request) {
	if err := h.enabled(); err != nil {
		Error(w, err)
		return
	}
	var b loginBody
	if err := h.DecodeJSON(r, &b); err != nil {
		Error(w, err)
		return
	}
	if h.Limiter != nil && !h.Limiter.Allow(ClientIP(r), strings.ToLower(truncate(b.Username, 64))) {
		w.Header().Set("Retry-After", "5")
		Error(w, protocol.Errorf(protocol.CodeRateLimited, "too many login attempts; try again later"))
		return
	}
	if b.Username == "" || len(b.Username) > MaxUsernameLen || len(b.Password) > 4*MaxPasswordLen {
		auth.DummyCheck()
		Error(w, errBadLogin)
		return
	}
	u, err := h.Store.UserByUsername(r.Context(), b.Username)
	if errors.Is(err, store.ErrNotFound) {
		auth.DummyCheck()
		Error(w, errBadLogin)
		return
	}
	if err != nil {
		Error(w, h.Internal(err, "find user"))
		return
	}
	ok, err := auth.CheckPassword(u.PasswordHash, b.Password)
	if err != nil {
		h.Log.Error("stored password hash unreadable", "user", u.ID, "err", err)
	}
	if !ok {
		Error(w, errBadLogin)
		return
	}
	pair, err := h.issue(r.Context(), u)
	if err != nil {
		Error(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, pair)
}

type refreshBody struct {
	RefreshToken string `json:"refresh_token"`
}

func (h *Accounts) refresh(w http.ResponseWriter, r *http.Request) {
	if err := h.enabled(); err != nil {
		Error(w, err)
		return
	}
	var b refreshBody
	if err := h.DecodeJSON(r, &b); err != nil {
		Error(w, err)
		return
	}
	if b.RefreshToken == "" {
		Error(w, protocol.Errorf(protocol.CodeBadRequest, "refresh_token is required"))
		return
	}
	// Rotation: the presented token is consumed whatever happens next.
	t, err := h.Store.ConsumeRefreshToken(r.Context(), auth.HashRefreshToken(b.RefreshToken), time.Now())
	if errors.Is(err, store.ErrRefreshTokenReused) {
		// A used token presented again: it may have been stolen, and the
		// thief or the owner holds its successor. Revoke them all; the
		// owner logs in again.
		h.Log.Warn("refresh token reused: revoking the user's refresh tokens", "user", t.UserID, "ip", ClientIP(r))
		if rerr := h.Store.RevokeRefreshTokens(r.Context(), t.UserID); rerr != nil {
			h.Log.Error("revoke refresh tokens", "user", t.UserID, "err", rerr)
		}
	}
	if errors.Is(err, store.ErrNotFound) {
		Error(w, protocol.Errorf(protocol.CodeUnauthorized, "refresh token is invalid, expired, used or revoked"))
		return
	}
	if err != nil {
		Error(w, h.Internal(err, "consume refresh token"))
		return
	}
	u, err := h.Store.UserByID(r.Context(), t.UserID)
	if errors.Is(err, store.ErrNotFound) {
		Error(w, protocol.Errorf(protocol.CodeUnauthorized, "the token's user no longer exists"))
		return
	}
	if err != nil {
		Error(w, h.Internal(err, "find user"))
		return
	}
	pair, err := h.issue(r.Context(), u)
	if err != nil {
		Error(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, pair)
}

// logout revokes a refresh token. It answers 204 whether or not the token
// was still valid (logging out twice is not an error).
func (h *Accounts) logout(w http.ResponseWriter, r *http.Request) {
	var b refreshBody
	if err := h.DecodeJSON(r, &b); err != nil {
		Error(w, err)
		return
	}
	if b.RefreshToken == "" {
		Error(w, protocol.Errorf(protocol.CodeBadRequest, "refresh_token is required"))
		return
	}
	// Deleted, not marked used: presenting it again later is "unknown",
	// not a reuse that would revoke the user's other sessions.
	if err := h.Store.DeleteRefreshToken(r.Context(), auth.HashRefreshToken(b.RefreshToken)); err != nil {
		Error(w, h.Internal(err, "revoke refresh token"))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// me returns the caller. A user known only from a backend-minted token has
// no account: their id, an empty username and the token's name.
func (h *Accounts) me(w http.ResponseWriter, r *http.Request) {
	c, err := h.RequireUser(r)
	if err != nil {
		Error(w, err)
		return
	}
	u, err := h.Store.UserByID(r.Context(), c.Claims.UserID)
	if errors.Is(err, store.ErrNotFound) {
		WriteJSON(w, http.StatusOK, UserJSON{ID: c.Claims.UserID, Username: "", DisplayName: c.Claims.Name})
		return
	}
	if err != nil {
		Error(w, h.Internal(err, "find user"))
		return
	}
	WriteJSON(w, http.StatusOK, UserJSON{ID: u.ID, Username: u.Username, DisplayName: u.DisplayName})
}

// issue mints an access token and stores a new refresh token for u.
func (h *Accounts) issue(ctx context.Context, u store.User) (TokenPair, error) {
	name := u.DisplayName
	if !validText(name, auth.MaxNameLen) {
		name = u.Username
	}
	access, exp, err := h.Signer.Mint(u.ID, name, h.AccessTTL, nil)
	if err != nil {
		return TokenPair{}, h.Internal(err, "mint access token")
	}
	refresh, hash := auth.NewRefreshToken()
	now := time.Now()
	if err := h.Store.CreateRefreshToken(ctx, store.RefreshToken{Hash: hash, UserID: u.ID,
		ExpiresAt: now.Add(h.RefreshTTL), CreatedAt: now}); err != nil {
		return TokenPair{}, h.Internal(err, "store refresh token")
	}
	return TokenPair{AccessToken: access, RefreshToken: refresh, ExpiresIn: int64(time.Until(exp).Round(time.Second) / time.Second),
		User: UserJSON{ID: u.ID, Username: u.Username, DisplayName: u.DisplayName}}, nil
}

// ClientIP is the request's peer address without the port. Forwarding
// headers are not trusted.
func ClientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// LoginLimiter is a token bucket per client IP and per username (rate and
// burst from config login-rate / login-burst). Buckets that have refilled
// are dropped by a sweep every sweepEvery, so the maps stay small; beyond
// maxKeys tracked keys new keys are not tracked until the next sweep (the
// other bucket still applies).
type LoginLimiter struct {
	rate  rate.Limit
	burst int

	mu        sync.Mutex
	ips       map[string]*rate.Limiter
	users     map[string]*rate.Limiter
	lastSweep time.Time
}

const (
	sweepEvery     = time.Minute
	maxLimiterKeys = 100_000
)

// NewLoginLimiter returns a limiter allowing perSecond attempts with burst.
func NewLoginLimiter(perSecond float64, burst int) *LoginLimiter {
	return &LoginLimiter{rate: rate.Limit(perSecond), burst: burst,
		ips: map[string]*rate.Limiter{}, users: map[string]*rate.Limiter{}, lastSweep: time.Now()}
}

// Allow takes one attempt from both the IP's and the username's bucket; it
// takes nothing and reports false when either is empty.
func (l *LoginLimiter) Allow(ip, username string) bool {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) >= sweepEvery || len(l.ips)+len(l.users) > maxLimiterKeys {
		l.sweep(now)
	}
	var reserved []*rate.Reservation
	ok := true
	for _, b := range []struct {
		m   map[string]*rate.Limiter
		key string
	}{{l.ips, ip}, {l.users, username}} {
		lim := b.m[b.key]
		if lim == nil {
			if len(b.m) >= maxLimiterKeys {
				continue
			}
			lim = rate.NewLimiter(l.rate, l.burst)
			b.m[b.key] = lim
		}
		res := lim.ReserveN(now, 1)
		if !res.OK() || res.DelayFrom(now) > 0 {
			res.CancelAt(now)
			ok = false
			break
		}
		reserved = append(reserved, res)
	}
	if !ok {
		for _, res := range reserved {
			res.CancelAt(now)
		}
	}
	return ok
}

// AllowKey takes one token from key's bucket (one map for every key kind:
// prefix keys, e.g. "user:" or "ip:").
func (l *LoginLimiter) AllowKey(key string) bool {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) >= sweepEvery || len(l.ips)+len(l.users) > maxLimiterKeys {
		l.sweep(now)
	}
	lim := l.users[key]
	if lim == nil {
		if len(l.users) >= maxLimiterKeys {
			return true
		}
		lim = rate.NewLimiter(l.rate, l.burst)
		l.users[key] = lim
	}
	return lim.AllowN(now, 1)
}

// sweep drops buckets that are full again (idle keys). Needs l.mu.
func (l *LoginLimiter) sweep(now time.Time) {
	l.lastSweep = now
	for _, m := range []map[string]*rate.Limiter{l.ips, l.users} {
		for k, lim := range m {
			if lim.TokensAt(now) >= float64(l.burst) {
				delete(m, k)
			}
		}
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
