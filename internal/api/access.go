package api

import (
	"context"

	"github.com/parleyhq/parley/internal/access"
)

// Decider is the access policy every handler asks (access.Policy): nil
// when sub may take action a in roomID, else a *protocol.Error (forbidden,
// not_found, conflict) or a store failure. The rules and their table are in
// internal/access (PROTOCOL.md v1.1 §4, §7).
type Decider interface {
	Decide(ctx context.Context, sub access.Subject, roomID string, a access.Action) error
}

// Subject is the caller as the access policy sees it.
func (c Caller) Subject() access.Subject {
	if c.APIKey {
		return access.Key()
	}
	return access.User(c.Claims)
}

// allow asks the policy whether c may take action a in roomID; store
// failures become a logged internal error.
func (b *Base) allow(ctx context.Context, pol Decider, c Caller, roomID string, a access.Action) error {
	if err := pol.Decide(ctx, c.Subject(), roomID, a); err != nil {
		return b.Internal(err, "access check")
	}
	return nil
}
