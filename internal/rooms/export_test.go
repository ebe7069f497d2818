package rooms

// SetCommitHook installs f to run inside every commit callback (with the
// room's lock held) until the returned restore is called. Tests only.
func SetCommitHook(f func(roomID string, version int64)) (restore func()) {
	commitHook.Store(&f)
	return func() { commitHook.Store(nil) }
}

// HistoryStats returns how many updates the live room keeps for catch-up
// and their accounted bytes (ok=false when the room is not in memory).
func (m *Manager) HistoryStats(roomID string) (n, bytes int, ok bool) {
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
