package rooms

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"

	"github.com/parleyhq/parley/internal/access"
	"github.com/parleyhq/parley/internal/gateway"
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

// updateStorage handles room:update_storage from a client in the room.
func (m *Manager) updateStorage(s gateway.Session, env protocol.Envelope) error {
	d, ops, perr := decodeStorage(env.Data, m.limits)
	if perr != nil {
		return perr
	}
	r, err := m.inRoom(s, d.RoomID)
	if err != nil {
		return err
	}
	r.mu.Lock()
	_, err = r.clientWith(s, access.Write)
	r.mu.Unlock()
	if err != nil {
		return err
	}
	reqID := env.ID
	// The sender's copy of room:storage_updated is its reply; errors after
	// submission (a failed commit) are reported the same way.
	return m.submitOps(r, s.ID(), ops, d.Ops, d.BaseVersion, func(res StorageResult) {
		if res.Err != nil {
			s.ReplyError(reqID, res.Err)
		}
	}, reqID, s)
}

// submit validates and applies a batch to the room's head document and
// queues it for commit. The sender (if any) gets its room:storage_updated
// with reqID; done is called after the commit succeeded or failed.
func (m *Manager) submit(r *Room, clientID string, rawOps json.RawMessage, base *int64,
	done func(StorageResult), reqID string, sender gateway.Session) error {
	ops, perr := parseBatch(rawOps, m.limits)
	if perr != nil {
		return perr
	}
	return m.submitOps(r, clientID, ops, rawOps, base, done, reqID, sender)
}

// submitOps is submit with ops already parsed from rawOps (parseBatch).
func (m *Manager) submitOps(r *Room, clientID string, ops []jsonpatch.Op, rawOps json.RawMessage, base *int64,
	done func(StorageResult), reqID string, sender gateway.Session) error {
	compact := compactJSON(rawOps)

	r.mu.Lock()
	if r.broken {
		r.mu.Unlock()
		return errResetting(r.id)
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
	epoch := r.epoch
	r.pending++
	u := store.DocUpdate{RoomID: r.id, Version: ver, ClientID: clientID, Ops: compact}
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
		m.committed(r, u, next, epoch, cerr, reqID, sender, done)
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
func (m *Manager) committed(r *Room, u store.DocUpdate, doc jsonpatch.Doc, epoch int, cerr error,
	reqID string, sender gateway.Session, done func(StorageResult)) {
	var res StorageResult
	func() {
		defer safe.Recover(m.log, m.metrics, safe.CommitCallback, func(any) {
			res = StorageResult{Err: protocol.Errorf(protocol.CodeInternal,
				"storage update of room %s may not have been applied; join the room again", r.id)}
			m.resetRoom(r)
		})
		res = m.applyCommitted(r, u, doc, epoch, cerr, reqID, sender)
	}()
	if res.Err == nil {
		m.metrics.StorageCommits.Inc()
	}
	m.maybeUnload(r)
	done(res)
}

// applyCommitted is the room's side of a commit callback: on success it
// advances the committed document, keeps the update for catch-up and tells
// everyone in the room; on failure it drops the head back to
// the committed document. It takes r.mu and releases it even when it
// panics.
func (m *Manager) applyCommitted(r *Room, u store.DocUpdate, doc jsonpatch.Doc, epoch int, cerr error,
	reqID string, sender gateway.Session) StorageResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pending--
	if h := commitHook.Load(); h != nil {
		(*h)(r.id, u.Version)
	}
	if r.broken {
		// The room was reset and has no clients: the batch is durable (or
		// not) and the next load reads whatever the store has.
		if cerr != nil {
			return StorageResult{Err: protocol.Errorf(protocol.CodeInternal, "storage update not saved; retry")}
		}
		return StorageResult{Version: u.Version}
	}
	if cerr != nil {
		if epoch == r.epoch {
			// The first failure of this generation: forget every batch
			// applied after the committed document.
			r.epoch++
			r.head, r.headVer = r.committed, r.committedVer
			r.sinceSnap = 0
			m.log.Error("storage commit failed", "room", r.id, "version", u.Version, "err", cerr)
		}
		return StorageResult{Err: protocol.Errorf(protocol.CodeInternal, "storage update not saved; retry")}
	}
	r.committed, r.committedVer, r.committedEnc = doc, u.Version, nil
	r.hist.push(u, m.opts.KeepUpdates, m.opts.KeepUpdatesBytes)
	data, _ := protocol.Marshal(struct {
		RoomID   string          `json:"room_id"`
		Version  int64           `json:"version"`
		ClientID string          `json:"client_id"`
		Ops      json.RawMessage `json:"ops"`
	}{r.id, u.Version, u.ClientID, u.Ops})
	except := ""
	if sender != nil {
		except = sender.ID()
		if _, in := r.clients[except]; in {
			sender.Send(protocol.Encode(protocol.TypeRoomStorageUpdated, reqID, json.RawMessage(data)))
		}
	}
	r.deliver(protocol.Encode(protocol.TypeRoomStorageUpdated, "", json.RawMessage(data)), except)
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
	r.epoch++
	clients := r.order
	r.order, r.clients = nil, map[string]*client{}
	r.mu.Unlock()
	m.log.Error("room reset after a panic in its commit callback", "room", r.id, "clients", len(clients))
	for _, c := range clients {
		m.trackConn(c.id, r, false)
		c.session.Send(protocol.Encode(protocol.TypeRoomLeft, "",
			map[string]string{"room_id": r.id, "client_id": c.id, "user_id": c.session.UserID()}))
	}
}

func (m *Manager) maybeUnload(r *Room) {
	m.mu.Lock()
	m.maybeUnloadLocked(r)
	m.mu.Unlock()
}

// Snapshot returns the committed document of a room (loading it if needed).
func (m *Manager) Snapshot(ctx context.Context, roomID string) (int64, json.RawMessage, error) {
	if err := validRoom(roomID); err != nil {
		return 0, nil, err
	}
	r, err := m.acquire(ctx, roomID)
	if err != nil {
		return 0, nil, err
	}
	defer m.release(r)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.broken {
		return 0, nil, errResetting(r.id)
	}
	if r.committedEnc == nil {
		r.committedEnc, _ = r.committed.MarshalJSON()
	}
	return r.committedVer, r.committedEnc, nil
}

// Patch applies a batch from the REST API (clientID names the caller, e.g.
// "api" or "user:<id>"), waits until it is durable and broadcast, and
// returns the new version.
func (m *Manager) Patch(ctx context.Context, roomID, clientID string, ops json.RawMessage, base *int64) (int64, error) {
	if err := validRoom(roomID); err != nil {
		return 0, err
	}
	r, err := m.acquire(ctx, roomID)
	if err != nil {
		return 0, err
	}
	defer m.release(r)
	ch := make(chan StorageResult, 1)
	if err := m.submit(r, clientID, ops, base, func(res StorageResult) { ch <- res }, "", nil); err != nil {
		return 0, err
	}
	select {
	case res := <-ch:
		if res.Err != nil {
			return 0, res.Err
		}
		return res.Version, nil
	case <-ctx.Done():
		// The batch may still commit; the caller cannot know.
		return 0, fmt.Errorf("waiting for commit: %w", ctx.Err())
	}
}
