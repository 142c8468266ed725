package server

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/meshguard/meshguard/distributor/state"
	"github.com/meshguard/meshguard/distributor/state/fs"
	"github.com/meshguard/meshguard/distributor/state/postgres"
)

// openState opens the configured state backend's bundle channel store. A
// database that is unreachable, refuses the credentials or holds a newer
// schema fails start-up here.
func (s *Server) openState(ctx context.Context) (state.Channels, error) {
	switch s.cfg.State.Backend {
	case "", "filesystem":
		return fs.Open(filepath.Join(s.cfg.Data, "bundles"), s.log)
	case "postgres":
		p := s.cfg.State.Postgres
		octx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		db, err := postgres.Open(octx, postgres.Options{
			URL: p.URL, PasswordFile: p.PasswordFile, SSLMode: p.SSLMode, CAFile: p.CAFile,
			MaxConns: int32(p.MaxConns), Logger: s.log,
		})
		if err != nil {
			return nil, err
		}
		s.db = db
		s.log.Info("state in PostgreSQL", "schema_version", postgres.SchemaVersion, "max_conns", db.Pool().Config().MaxConns)
		return db.Channels(), nil
	default:
		return nil, fmt.Errorf("state.backend %q: want filesystem or postgres", s.cfg.State.Backend)
	}
}
