package rooms

// HistoryStats returns how many updates the live room keeps in memory for
// catch-up and their accounted size in bytes (updateCost), or ok=false when
// the room is not in memory. For tests and diagnostics.
func (m *Manager) HistoryStats(roomID string) (updates, bytes int, ok bool) {
	m.mu.Lock()
	r := m.rooms[roomID]
	m.mu.Unlock()
	if r == nil {
		return 0, 0, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hist.len(), r.hist.bytes, true
}

// SetCommitHook installs f to run inside every commit callback of every
// Manager (with the room's lock held, after the batch stopped counting as
// pending) until restore is called. Only tests use it, to inject a panic in
// a commit callback (internal/rooms/wiretest); production never sets it.
func SetCommitHook(f func(roomID string, version int64)) (restore func()) {
	commitHook.Store(&f)
	return func() { commitHook.Store(nil) }
}
