package rooms

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/parleyhq/parley/internal/access"
	"github.com/parleyhq/parley/internal/gateway"
	"github.com/parleyhq/parley/internal/jsonpatch"
	"github.com/parleyhq/parley/internal/protocol"
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
	var d storageData
	r, err := m.decodeInRoom(s, env, &d)
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
	return m.submit(r, s.ID(), d.Ops, d.BaseVersion, func(res StorageResult) {
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
	if len(rawOps) == 0 {
		return protocol.Errorf(protocol.CodeBadRequest, "ops is required")
	}
	ops, err := jsonpatch.ParseOps(rawOps, m.limits)
	if err != nil {
		return mapPatchError(err)
	}
	if len(ops) == 0 {
		return protocol.Errorf(protocol.CodeBadRequest, "ops must not be empty")
	}
	compact := compactJSON(rawOps)

	r.mu.Lock()
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

// committed runs on the committer's goroutine, in version order per room.
func (m *Manager) committed(r *Room, u store.DocUpdate, doc jsonpatch.Doc, epoch int, cerr error,
	reqID string, sender gateway.Session, done func(StorageResult)) {
	r.mu.Lock()
	r.pending--
	if cerr != nil {
		if epoch == r.epoch {
			// The first failure of this generation: forget every batch
			// applied after the committed document.
			r.epoch++
			r.head, r.headVer = r.committed, r.committedVer
			r.sinceSnap = 0
			m.log.Error("storage commit failed", "room", r.id, "version", u.Version, "err", cerr)
		}
		r.mu.Unlock()
		m.maybeUnload(r)
		done(StorageResult{Err: protocol.Errorf(protocol.CodeInternal, "storage update not saved; retry")})
		return
	}
	r.committed, r.committedVer, r.committedEnc = doc, u.Version, nil
	keep := m.opts.KeepUpdates
	u.Snapshot = nil
	r.recent = append(r.recent, u)
	if len(r.recent) > keep+keep/2 {
		n := copy(r.recent, r.recent[len(r.recent)-keep:])
		clear(r.recent[n:])
		r.recent = r.recent[:n]
	}
	data, _ := json.Marshal(struct {
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
	r.mu.Unlock()
	m.metrics.StorageCommits.Inc()
	m.maybeUnload(r)
	done(StorageResult{Version: u.Version})
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
