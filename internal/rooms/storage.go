package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"

	"github.com/parleyhq/parley/internal/access"
	"github.com/parleyhq/parley/internal/jsonpatch"
	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/safe"
	"github.com/parleyhq/parley/internal/store"
)

type storageData struct {
	RoomID      string          `json:"room_id"`
	Ops         json.RawMessage `json:"ops"`
	BaseVersion *int64          `json:"base_version,omitempty"`
}

// StorageResult is what a committed (or failed) batch reports to its sender.
type StorageResult struct {
	Version int64
	Err     *protocol.Error
}

// submitOps applies a batch (ops, parsed from rawOps) to the room's head
// document and queues it for commit without waiting. The origin (a client,
// or a REST call when o.conn is "") gets its own room:storage_updated as
// the reply once the batch is durable; done (may be nil) is called after
// the commit succeeded or failed.
func (m *Manager) submitOps(r *Room, o origin, clientID string, ops []jsonpatch.Op, rawOps json.RawMessage, base *int64,
	done func(StorageResult)) *protocol.Error {
	compact := compactJSON(rawOps)

	r.mu.Lock()
	if err := r.usable(); err != nil {
		r.mu.Unlock()
		return err
	}
	if o.conn != "" {
		if _, err := r.clientWith(o, access.Write); err != nil {
			r.mu.Unlock()
			return err
		}
	}
	if base != nil && *base != r.headVer {
		cur := r.headVer
		r.mu.Unlock()
		return protocol.Errorf(protocol.CodeVersionConflict, "base_version %d is not the current version %d", *base, cur)
	}
	next, err := jsonpatch.Apply(r.head, ops, m.limits)
	if err != nil {
		r.mu.Unlock()
		return mapPatchError(err)
	}
	r.head = next
	r.headVer++
	ver := r.headVer
	gen := r.gen
	r.pending++
	u := store.DocUpdate{RoomID: r.id, Version: ver, ClientID: clientID, Ops: compact, Epoch: r.fence}
	r.sinceSnap++
	if r.sinceSnap >= m.opts.SnapshotEvery {
		snap, _ := next.MarshalJSON()
		u.Snapshot = snap
		u.KeepUpdates = int64(m.opts.KeepUpdates)
		r.sinceSnap = 0
	}
	// Submit under the room lock: the committer's queue order must be the
	// version order. Submit does not block on I/O.
	m.committer.Submit(u, func(cerr error) {
		m.committed(r, u, next, gen, cerr, o, done)
	})
	r.mu.Unlock()
	return nil
}

// commitHook, when set (tests only, see export_test.go), runs inside every
// commit callback with the room's lock held, after the room counted the
// batch as no longer pending: a panic there is one in the callback.
var commitHook atomic.Pointer[func(roomID string, version int64)]

// committed runs on the committer's goroutine, in version order per room.
// A panic while it updates the room is contained here: the room is reset
// (resetRoom), the batch's sender gets internal, and the committer and
// every other room go on.
func (m *Manager) committed(r *Room, u store.DocUpdate, doc jsonpatch.Doc, gen int, cerr error, o origin, done func(StorageResult)) {
	var res StorageResult
	func() {
		defer safe.Recover(m.log, m.metrics, safe.CommitCallback, func(any) {
			res = StorageResult{Err: protocol.Errorf(protocol.CodeInternal,
				"storage update of room %s may not have been applied; join the room again", r.id)}
			m.resetRoom(r)
		})
		res = m.applyCommitted(r, u, doc, gen, cerr, o)
	}()
	if res.Err == nil {
		m.metrics.StorageCommits.Inc()
	} else if o.conn != "" {
		r.fail(o, res.Err)
	}
	m.maybeUnload(r)
	if done != nil {
		done(res)
	}
}

// errNotSaved is what the sender of a batch that failed to commit hears.
func errNotSaved() *protocol.Error {
	return protocol.Errorf(protocol.CodeInternal, "storage update not saved; retry")
}

// applyCommitted is the room's side of a commit callback: on success it
// advances the committed document, keeps the update for catch-up and tells
// everyone in the room; on failure it drops the head back to the committed
// document, and when the store says another writer got there first
// (ErrConflict) or a newer owner holds the room (ErrFenced), the room is
// no longer this node's to order: it is given up (cluster) or reloaded from
// the store (one node). It takes r.mu and releases it even when it panics.
func (m *Manager) applyCommitted(r *Room, u store.DocUpdate, doc jsonpatch.Doc, gen int, cerr error, o origin) StorageResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pending--
	if h := commitHook.Load(); h != nil {
		(*h)(r.id, u.Version)
	}
	if r.broken || r.gone {
		// The room was reset or given up: the batch is durable (or not) and
		// the next load reads whatever the store has.
		if cerr != nil {
			return StorageResult{Err: errNotSaved()}
		}
		return StorageResult{Version: u.Version}
	}
	if cerr != nil {
		if gen == r.gen {
			// The first failure of this generation: forget every batch
			// applied after the committed document.
			r.gen++
			r.head, r.headVer = r.committed, r.committedVer
			r.sinceSnap = 0
			if errors.Is(cerr, store.ErrConflict) || errors.Is(cerr, store.ErrFenced) {
				// Expected in a cluster while a room changes owner.
				m.log.Warn("storage commit refused: another node orders the room", "room", r.id, "version", u.Version, "err", cerr)
				m.lostRoom(r)
			} else {
				m.log.Error("storage commit failed", "room", r.id, "version", u.Version, "err", cerr)
			}
		}
		return StorageResult{Err: errNotSaved()}
	}
	r.committed, r.committedVer, r.committedEnc = doc, u.Version, nil
	r.hist.push(u, m.opts.KeepUpdates, m.opts.KeepUpdatesBytes)
	data, _ := protocol.Marshal(struct {
		RoomID   string          `json:"room_id"`
		Version  int64           `json:"version"`
		ClientID string          `json:"client_id"`
		Ops      json.RawMessage `json:"ops"`
	}{r.id, u.Version, u.ClientID, u.Ops})
	r.deliver(protocol.Encode(protocol.TypeRoomStorageUpdated, "", json.RawMessage(data)), o.conn)
	if o.conn != "" {
		if _, in := r.clients[o.conn]; in {
			r.reply(o, protocol.TypeRoomStorageUpdated, data)
		}
	}
	return StorageResult{Version: u.Version}
}

// resetRoom takes a room whose state may be inconsistent (a commit
// callback panicked) out of service: every client is sent its own
// room:left and untracked, the room refuses joins and batches (internal,
// retry), and it leaves memory once no commit of it is pending; the next
// join loads it from the store, which has every batch the committer wrote
// (the room's later queued batches are still written, in order, so its
// versions stay gapless).
func (m *Manager) resetRoom(r *Room) {
	r.mu.Lock()
	r.broken = true
	r.gen++
	clients := append([]*client(nil), r.order...)
	for _, c := range clients {
		r.removeLocked(c.id, "", removedByOwner)
	}
	r.mu.Unlock()
	m.log.Error("room reset after a panic in its commit callback", "room", r.id, "clients", len(clients))
	for _, c := range clients {
		if c.sink != nil {
			m.untrack(c.id, r.id)
		}
	}
}

// Snapshot returns the committed document of a room, from its owner
// (loading it on this node when no node has it live).
func (m *Manager) Snapshot(ctx context.Context, roomID string) (v int64, data json.RawMessage, err error) {
	if err := validRoom(roomID); err != nil {
		return 0, nil, err
	}
	// A room changing owner answers "not the owner": find it again.
	for attempt := 0; attempt < 3; attempt++ {
		if v, data, err = m.snapshot(ctx, roomID); !isNotOwner(err) {
			break
		}
	}
	return v, data, err
}

// isNotOwner reports an errNotOwner answer (nothing was applied).
func isNotOwner(err error) bool {
	var perr *protocol.Error
	return errors.As(err, &perr) && perr.Code == protocol.CodeInternal && strings.HasSuffix(perr.Message, notOwnerSuffix)
}

func (m *Manager) snapshot(ctx context.Context, roomID string) (int64, json.RawMessage, error) {
	r, remote, err := m.ownerRoom(ctx, roomID)
	if err != nil {
		return 0, nil, err
	}
	if r == nil {
		res, err := m.call(ctx, remote, nodeMsg{Kind: kindSnapshot, Room: roomID, Epoch: remote.Epoch})
		if err != nil {
			return 0, nil, err
		}
		return res.Version, res.Data, nil
	}
	defer m.release(r)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.usable(); err != nil {
		return 0, nil, err
	}
	if r.committedEnc == nil {
		r.committedEnc, _ = r.committed.MarshalJSON()
	}
	return r.committedVer, r.committedEnc, nil
}

// Patch applies a batch from the REST API (clientID names the caller, e.g.
// "api" or "user:<id>") through the room's owner, waits until it is
// durable and broadcast, and returns the new version.
func (m *Manager) Patch(ctx context.Context, roomID, clientID string, ops json.RawMessage, base *int64) (v int64, err error) {
	if err := validRoom(roomID); err != nil {
		return 0, err
	}
	parsed, perr := parseBatch(ops, m.limits)
	if perr != nil {
		return 0, perr
	}
	// "Not the owner" means nothing was applied: find the owner again.
	for attempt := 0; attempt < 3; attempt++ {
		if v, err = m.patch(ctx, roomID, clientID, parsed, ops, base); !isNotOwner(err) {
			break
		}
	}
	return v, err
}

func (m *Manager) patch(ctx context.Context, roomID, clientID string, parsed []jsonpatch.Op, ops json.RawMessage, base *int64) (int64, error) {
	r, remote, err := m.ownerRoom(ctx, roomID)
	if err != nil {
		return 0, err
	}
	if r == nil {
		res, err := m.call(ctx, remote, nodeMsg{Kind: kindPatch, Room: roomID, Epoch: remote.Epoch, Client: clientID,
			Ops: ops, Base: base})
		if err != nil {
			return 0, err
		}
		return res.Version, nil
	}
	defer m.release(r)
	// Bounded like a relayed call, so that the answer does not depend on
	// the node the request reached.
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	ch := make(chan StorageResult, 1)
	if err := m.submitOps(r, origin{}, clientID, parsed, ops, base, func(res StorageResult) { ch <- res }); err != nil {
		return 0, err
	}
	select {
	case res := <-ch:
		if res.Err != nil {
			return 0, res.Err
		}
		return res.Version, nil
	case <-ctx.Done():
		return 0, errOutcomeUnknown(r.id)
	}
}

// errOutcomeUnknown answers a REST storage request whose commit was not
// confirmed within callTimeout (a slow database, an owner that died): the
// batch may still be applied. The same answer whichever node the request
// reached.
func errOutcomeUnknown(roomID string) *protocol.Error {
	return protocol.Errorf(protocol.CodeInternal, "the update of room %s was not confirmed in time and may still be applied;"+
		" read the storage (or send base_version) before retrying", roomID)
}
