package server

import (
	"context"
	"errors"

	"github.com/meshguard/meshguard/distributor/decisionlog"
	"github.com/meshguard/meshguard/distributor/state/postgres"
)

// errNoSearch: console search runs over the file log's index; with the
// decision log in PostgreSQL it is not built yet.
var errNoSearch = errors.New("decision search is not available with state.backend postgres (use GET /v1/decisions queries, export and proofs)")

// pgSearch answers the console's searcher with errNoSearch.
type pgSearch struct{}

func (pgSearch) Search(context.Context, decisionlog.Filter, decisionlog.PageRequest) (decisionlog.Page, error) {
	return decisionlog.Page{}, errNoSearch
}

func (pgSearch) Record(context.Context, uint64) (decisionlog.StoredRecord, error) {
	return decisionlog.StoredRecord{}, errNoSearch
}

func (pgSearch) Stats(context.Context, decisionlog.Filter, decisionlog.StatsRequest) (decisionlog.Stats, error) {
	return decisionlog.Stats{}, errNoSearch
}

func (pgSearch) Values(context.Context, string, int) ([]decisionlog.ValueCount, error) {
	return nil, errNoSearch
}

func (pgSearch) Integrity() decisionlog.Integrity {
	return decisionlog.Integrity{Method: "RFC 6962 Merkle tree (in PostgreSQL; verify with meshguard audit verify)"}
}

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
