package server

import "context"

// wireFeatures registers the feature handlers (rooms, chat, media) on the
// gateway and the REST API on the mux.
func (s *Server) wireFeatures(ctx context.Context) error {
	return nil
}
