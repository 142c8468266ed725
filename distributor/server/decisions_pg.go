package server

import (
	"context"

	"github.com/meshguard/meshguard/distributor/state/postgres"
)

// recordLine is the stored line of record seq, from the index over the
// file log or from the database.
func (s *Server) recordLine(ctx context.Context, seq uint64) ([]byte, error) {
	if d, ok := s.dlog.(*postgres.Decisions); ok {
		return d.Line(ctx, seq)
	}
	return s.index.Line(ctx, seq)
}

// DecisionLogKey is the checkpoint verifier key auditors pin.
func (s *Server) DecisionLogKey() string { return s.dlog.Key().Public }
