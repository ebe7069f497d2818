package api

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"golang.org/x/sync/semaphore"
	"golang.org/x/time/rate"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/clientip"
	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/store"
)

// Accounts serves registration, login, refresh-token rotation, logout and
// GET /api/me. Access tokens are the same JWTs the WebSocket takes.
type Accounts struct {
	*Base
	Store      store.Accounts // users and refresh tokens
	Signer     *auth.Signer   // nil when no HS256 secret is configured: accounts are disabled
	AccessTTL  time.Duration
	RefreshTTL time.Duration
	// Limits against hostile clients; nil fields are off.
	Limits AccountLimits
}

// AccountLimits protect the account endpoints: Login limits login attempts
// (see LoginLimiter), Register limits registrations per client IP (IPKey),
// Hashes bounds concurrent password hashing for both.
type AccountLimits struct {
	Login    *LoginLimiter
	Register *KeyLimiter
	Hashes   *HashGate
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

// validate checks a decoded register body and sets display to the display
// name to store.
func (b *registerBody) validate(display *string) error {
	if !validUsername(b.Username) {
		return protocol.Errorf(protocol.CodeBadRequest, "username must be %d-%d characters of [a-z0-9_.-]", MinUsernameLen, MaxUsernameLen)
	}
	if n := utf8.RuneCountInString(b.Password); n < MinPasswordLen || n > MaxPasswordLen {
		return protocol.Errorf(protocol.CodeBadRequest, "password must be %d-%d characters", MinPasswordLen, MaxPasswordLen)
	}
	*display = b.Username
	if b.DisplayName != nil {
		*display = strings.TrimSpace(*b.DisplayName)
		if *display == "" || !validText(*display, auth.MaxNameLen) {
			return protocol.Errorf(protocol.CodeBadRequest, "display_name must be 1-%d characters without control characters", auth.MaxNameLen)
		}
	}
	return nil
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
	var display string
	if err := b.validate(&display); err != nil {
		Error(w, err)
		return
	}
	// Counted once the body is valid, before the expensive part (hash, row).
	if h.Limits.Register != nil && !h.Limits.Register.Allow(IPKey(ClientIP(r))) {
		w.Header().Set("Retry-After", "20")
		Error(w, protocol.Errorf(protocol.CodeRateLimited, "too many registrations from this address; try again later"))
		return
	}
	var hash string
	var err error
	if gerr := h.Limits.Hashes.Do(r.Context(), func() { hash, err = auth.HashPassword(b.Password) }); gerr != nil {
		w.Header().Set("Retry-After", "2")
		Error(w, gerr)
		return
	}
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
	att, admitted := h.Limits.Login.Begin(ClientIP(r), strings.ToLower(truncate(b.Username, 64)))
	if !admitted {
		w.Header().Set("Retry-After", "5")
		Error(w, protocol.Errorf(protocol.CodeRateLimited, "too many login attempts; try again later"))
		return
	}
	defer att.Done()
	if b.Username == "" || len(b.Username) > MaxUsernameLen || len(b.Password) > 4*MaxPasswordLen {
		h.dummyCheck(w, r, att)
		return
	}
	u, err := h.Store.UserByUsername(r.Context(), b.Username)
	if errors.Is(err, store.ErrNotFound) {
		h.dummyCheck(w, r, att)
		return
	}
	if err != nil {
		Error(w, h.Internal(err, "find user"))
		return
	}
	var ok bool
	if gerr := h.Limits.Hashes.Do(r.Context(), func() { ok, err = auth.CheckPassword(u.PasswordHash, b.Password) }); gerr != nil {
		w.Header().Set("Retry-After", "2")
		Error(w, gerr)
		return
	}
	if err != nil {
		h.Log.Error("stored password hash unreadable", "user", u.ID, "err", err)
	}
	if !ok {
		att.Fail()
		Error(w, errBadLogin)
		return
	}
	att.Succeed()
	pair, err := h.issue(r.Context(), u)
	if err != nil {
		Error(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, pair)
}

// dummyCheck spends a password check's time (auth.DummyCheck, through the
// hashing gate like a real one) and answers the same bad-login error, so
// unknown usernames look like wrong passwords, and are charged to att as
// failures like them.
func (h *Accounts) dummyCheck(w http.ResponseWriter, r *http.Request, att *LoginAttempt) {
	if err := h.Limits.Hashes.Do(r.Context(), auth.DummyCheck); err != nil {
		w.Header().Set("Retry-After", "2")
		Error(w, err)
		return
	}
	att.Fail()
	Error(w, errBadLogin)
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
func ClientIP(r *http.Request) string { return clientip.FromRequest(r) }

// KeyLimiter is a token bucket per key (rate and burst from config). The
// map stays bounded: buckets that have refilled (idle keys) are dropped by a
// sweep every sweepEvery or when the map reaches maxLimiterKeys, and
// beyond maxLimiterKeys live keys a new key is not tracked (allowed) until
// the next sweep. Failing open there is deliberate: failing closed would let
// whoever fills the map lock everyone out, and what the limits protect
// (memory, CPU) is bounded elsewhere too (HashGate).
type KeyLimiter struct {
	rate  rate.Limit
	burst int

	mu        sync.Mutex
	m         map[string]*rate.Limiter
	lastSweep time.Time
}

const (
	sweepEvery     = time.Minute
	maxLimiterKeys = 100_000
)

// NewKeyLimiter allows perSecond events per key with burst.
func NewKeyLimiter(perSecond float64, burst int) *KeyLimiter {
	return &KeyLimiter{rate: rate.Limit(perSecond), burst: burst, m: map[string]*rate.Limiter{}, lastSweep: time.Now()}
}

// bucket returns key's limiter, creating it; nil when the map is full.
func (k *KeyLimiter) bucket(key string, now time.Time) *rate.Limiter {
	k.mu.Lock()
	defer k.mu.Unlock()
	// A full map is swept at most once a second, so that a flood of new
	// keys cannot make every request pay for a sweep.
	if since := now.Sub(k.lastSweep); since >= sweepEvery || (len(k.m) >= maxLimiterKeys && since >= time.Second) {
		k.sweep(now)
	}
	lim := k.m[key]
	if lim == nil {
		if len(k.m) >= maxLimiterKeys {
			return nil
		}
		lim = rate.NewLimiter(k.rate, k.burst)
		k.m[key] = lim
	}
	return lim
}

// Allow takes one token from key's bucket.
func (k *KeyLimiter) Allow(key string) bool {
	now := time.Now()
	lim := k.bucket(key, now)
	return lim == nil || lim.AllowN(now, 1)
}

// Len is the number of tracked keys.
func (k *KeyLimiter) Len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.m)
}

// sweep drops buckets that are full again (idle keys). Needs k.mu.
func (k *KeyLimiter) sweep(now time.Time) {
	k.lastSweep = now
	for key, lim := range k.m {
		if lim.TokensAt(now) >= float64(k.burst) {
			delete(k.m, key)
		}
	}
}

// LoginLimiter limits login attempts so that online guessing stays slow
// while nobody can lock a user out from addresses they control (OWASP
// "Blocking Brute Force Attacks": per-account throttling that does not
// apply to known-good sources). Three token buckets:
//
//   - per (client IP, username) pair (config login-rate / login-burst):
//     every attempt takes a token; a success refills it;
//   - per client IP (login-ip-*), against one address spraying usernames:
//     every attempt takes a token;
//   - per username from all addresses (login-user-*), against distributed
//     guessing: only FAILED attempts take a token (a wrong password or an
//     unknown username), and it is consulted only for a pair that is not
//     clean.
//
// A pair is clean when it has no failure recorded in the last failWindow
// (LoginFailureWindow) and no attempt in flight. A clean pair is never
// refused because of the username bucket, so the victim's own address
// gets in however many other addresses fail on their username; a success
// clears the pair's failure record. An attacker gets one attempt per fresh
// address that the username bucket does not gate (still charged to it, and
// bounded by the IP and pair buckets); after that address's first failure
// it is gated like any other. In-flight attempts make a pair unclean, so
// concurrent requests from a fresh address get no more than one ungated
// guess between them.
//
// Memory is bounded: pair records that are idle (bucket full again, no
// failure in the window, nothing in flight) are swept, and the map holds at
// most maxLimiterKeys pairs. A pair that cannot be tracked because the map
// is full of live records is treated as unclean (the username bucket
// applies, as for an address with failures): under such a flood the limiter
// degrades to plain per-username throttling instead of to no throttling.
// The IP and username buckets are KeyLimiters (bounded the same way, fail
// open when full).
type LoginLimiter struct {
	rate  rate.Limit // pair bucket
	burst int
	keys  *KeyLimiter // AllowKey (WriteLimit); same rate and burst
	ip    *KeyLimiter
	user  *KeyLimiter

	failWindow time.Duration
	maxPairs   int
	now        func() time.Time // time.Now; tests move it

	mu        sync.Mutex // held across the KeyLimiters' own locks, never the reverse
	pairs     map[string]*loginPair
	lastSweep time.Time
}

// LoginFailureWindow is how long a failed login keeps its (IP, username)
// pair unclean, that is, subject to the per-username bucket.
const LoginFailureWindow = 15 * time.Minute

type loginPair struct {
	lim      *rate.Limiter
	failures int
	lastFail time.Time
	inflight int
}

// clean: no failure within the window, nothing in flight.
func (p *loginPair) clean(now time.Time, window time.Duration) bool {
	return p.inflight == 0 && (p.failures == 0 || now.Sub(p.lastFail) >= window)
}

// NewLoginLimiter returns a limiter allowing perSecond attempts with burst
// per (IP, username) pair. AllowKey uses the same bucket kind for any key.
func NewLoginLimiter(perSecond float64, burst int) *LoginLimiter {
	return &LoginLimiter{rate: rate.Limit(perSecond), burst: burst, keys: NewKeyLimiter(perSecond, burst),
		failWindow: LoginFailureWindow, maxPairs: maxLimiterKeys, now: time.Now,
		pairs: map[string]*loginPair{}, lastSweep: time.Now()}
}

// PerIP adds a bucket per client IP.
func (l *LoginLimiter) PerIP(perSecond float64, burst int) *LoginLimiter {
	l.ip = NewKeyLimiter(perSecond, burst)
	return l
}

// PerUsername adds a bucket per username across all IPs, charged by
// failures only and consulted for unclean pairs only.
func (l *LoginLimiter) PerUsername(perSecond float64, burst int) *LoginLimiter {
	l.user = NewKeyLimiter(perSecond, burst)
	return l
}

// LoginAttempt is an admitted login attempt. The caller reports its
// outcome with Fail or Succeed, and calls Done in every case (a defer):
// Done alone (e.g. the hashing gate was busy, or an internal error) charges
// no failure. A nil attempt (no limiter) ignores every call.
type LoginAttempt struct {
	l        *LoginLimiter
	pair     *loginPair // nil when the pair map was full
	username string
	done     bool
}

// Begin admits an attempt on username from ip, or reports false (429):
// when the pair or IP bucket is empty, or the pair is unclean and the
// username bucket is empty. A refusal takes nothing. A nil limiter admits
// everything.
func (l *LoginLimiter) Begin(ip, username string) (*LoginAttempt, bool) {
	if l == nil {
		return nil, true
	}
	now := l.now()
	ipKey := IPKey(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.pair(ipKey+"|"+username, now)
	if p != nil && p.lim.TokensAt(now) < 1 {
		return nil, false
	}
	var ipLim *rate.Limiter
	if l.ip != nil {
		if ipLim = l.ip.bucket(ipKey, now); ipLim != nil && ipLim.TokensAt(now) < 1 {
			return nil, false
		}
	}
	if l.user != nil && (p == nil || !p.clean(now, l.failWindow)) {
		if u := l.user.bucket(username, now); u != nil && u.TokensAt(now) < 1 {
			return nil, false
		}
	}
	if p != nil {
		p.lim.AllowN(now, 1)
		p.inflight++
	}
	if ipLim != nil {
		ipLim.AllowN(now, 1)
	}
	return &LoginAttempt{l: l, pair: p, username: username}, true
}

// pair returns the record of key, creating it; nil when the map is full of
// live records. Needs l.mu.
func (l *LoginLimiter) pair(key string, now time.Time) *loginPair {
	// A full map is swept at most once a second (see KeyLimiter.bucket).
	if since := now.Sub(l.lastSweep); since >= sweepEvery || (len(l.pairs) >= l.maxPairs && since >= time.Second) {
		l.sweep(now)
	}
	p := l.pairs[key]
	if p == nil {
		if len(l.pairs) >= l.maxPairs {
			return nil
		}
		p = &loginPair{lim: rate.NewLimiter(l.rate, l.burst)}
		l.pairs[key] = p
	}
	return p
}

// sweep drops idle pair records: bucket full again, clean. Needs l.mu.
func (l *LoginLimiter) sweep(now time.Time) {
	l.lastSweep = now
	for key, p := range l.pairs {
		if p.clean(now, l.failWindow) && p.lim.TokensAt(now) >= float64(l.burst) {
			delete(l.pairs, key)
		}
	}
}

// Pairs is the number of tracked (IP, username) records.
func (l *LoginLimiter) Pairs() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.pairs)
}

// Fail records a wrong password (or unknown username): the pair becomes
// unclean for the failure window and the username bucket is charged one
// token, going into debt if need be (concurrent failures from clean
// pairs), so that every failure is paid for.
func (a *LoginAttempt) Fail() {
	if a == nil || a.done {
		return
	}
	a.done = true
	l := a.l
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if a.pair != nil {
		a.pair.inflight--
		a.pair.failures++
		a.pair.lastFail = now
	}
	if l.user != nil {
		if u := l.user.bucket(a.username, now); u != nil {
			u.ReserveN(now, 1) // kept: the debt delays later unclean attempts
		}
	}
}

// Succeed records a right password: the pair's failure record is cleared
// and its bucket refilled.
func (a *LoginAttempt) Succeed() {
	if a == nil || a.done {
		return
	}
	a.done = true
	l := a.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if a.pair != nil {
		a.pair.inflight--
		a.pair.failures = 0
		a.pair.lim = rate.NewLimiter(l.rate, l.burst)
	}
}

// Done ends an attempt whose outcome was not reported: nothing is charged
// beyond the tokens Begin took. After Fail or Succeed it does nothing.
func (a *LoginAttempt) Done() {
	if a == nil || a.done {
		return
	}
	a.done = true
	a.l.mu.Lock()
	defer a.l.mu.Unlock()
	if a.pair != nil {
		a.pair.inflight--
	}
}

// AllowKey takes one token from key's bucket (a plain KeyLimiter with the
// limiter's pair rate and burst; WriteLimit uses it with prefixed keys,
// e.g. "user:" or "ip:").
func (l *LoginLimiter) AllowKey(key string) bool { return l.keys.Allow(key) }

// IPKey is the rate-limit key of a client address (clientip.Key: the
// address for IPv4, its /64 for IPv6).
func IPKey(ip string) string { return clientip.Key(ip) }

// HashGate bounds concurrent argon2id computations (each allocates 19 MiB)
// with a weighted semaphore (golang.org/x/sync/semaphore), so memory stays
// bounded whatever arrives: a request that gets no slot within the wait is
// refused with rate_limited instead of queuing forever.
type HashGate struct {
	sem  *semaphore.Weighted
	wait time.Duration
}

// NewHashGate allows n hashes at once; callers wait at most wait for a slot.
func NewHashGate(n int, wait time.Duration) *HashGate {
	return &HashGate{sem: semaphore.NewWeighted(int64(n)), wait: wait}
}

// errHashBusy is the answer when no hashing slot freed up in time.
var errHashBusy = protocol.Errorf(protocol.CodeRateLimited, "the server is busy checking passwords; retry in a few seconds")

// Do runs fn holding a slot. It returns errHashBusy (rate_limited) when no
// slot frees up within the wait or ctx ends first. A nil gate runs fn.
func (g *HashGate) Do(ctx context.Context, fn func()) error {
	if g == nil {
		fn()
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, g.wait)
	defer cancel()
	if err := g.sem.Acquire(ctx, 1); err != nil {
		return errHashBusy
	}
	defer g.sem.Release(1)
	fn()
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
