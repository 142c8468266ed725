package server

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/meshguard/meshguard/distributor/modules"
	"github.com/meshguard/meshguard/distributor/oci"
	"github.com/meshguard/meshguard/distributor/store"
	"github.com/meshguard/meshguard/distributor/store/ocistore"
)

// storageHandlers builds the /v2/ (OCI distribution) handler and the
// /modules/ plain-HTTP module handler over the configured storage backend.
func (s *Server) storageHandlers() (ociHandler, modulesHandler http.Handler, err error) {
	var st store.Store
	switch s.cfg.Storage.Backend {
	case "", "filesystem":
		fs, err := store.OpenFS(filepath.Join(s.cfg.Data, "oci"), store.FSOptions{
			MaxUploads: s.cfg.Storage.MaxUploads, UploadTTL: s.cfg.Storage.UploadTTL, Logger: s.log,
		})
		if err != nil {
			return nil, nil, err
		}
		st = fs
	case "oci":
		o, err := s.cfg.Storage.OCI.options()
		if err != nil {
			return nil, nil, err
		}
		if o.Auth, err = s.cfg.Storage.OCI.credentials().Authenticator(); err != nil {
			return nil, nil, fmt.Errorf("config: storage.oci: %w", err)
		}
		o.Logger = s.log
		reg, err := ocistore.New(o)
		if err != nil {
			return nil, nil, err
		}
		s.log.Info("storage in an external OCI registry", "registry", o.Registry, "prefix", o.Prefix, "plain_http", o.PlainHTTP)
		st = reg
	default:
		return nil, nil, fmt.Errorf("storage.backend %q: want filesystem or oci", s.cfg.Storage.Backend)
	}
	s.store = st
	h := oci.NewHandler(st, oci.Options{
		AllowDelete:      s.cfg.Storage.AllowDelete,
		MaxBlobBytes:     int64(s.cfg.Limits.ModuleBytes),
		MaxInflatedBytes: int64(s.cfg.Limits.ModuleBytes),
		Logger:           s.log,
		Metrics:          s.m.reg,
	})
	// Unpacked modules: a byte-bounded memory cache, large ones in files
	// under the data directory (left-overs of an earlier process dropped).
	spool := filepath.Join(s.cfg.Data, "cache", "modules")
	if err := os.RemoveAll(spool); err != nil {
		return nil, nil, fmt.Errorf("module cache: %w", err)
	}
	mh := modules.NewHTTPHandler(st, modules.HTTPOptions{
		Logger: s.log, MaxModuleBytes: int64(s.cfg.Limits.ModuleBytes),
		CacheBytes: int64(s.cfg.Limits.ModuleCacheBytes), SpoolDir: spool, Metrics: s.m.reg,
	})
	return h, mh, nil
}

// scrubLoop re-hashes the filesystem store's blobs every interval.
func (s *Server) scrubLoop(ctx context.Context, every time.Duration) {
	fs, ok := s.store.(*store.FS)
	if !ok || every <= 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rep, err := fs.Scrub(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Error("blob scrub failed", "err", err)
		case len(rep.Quarantined) > 0:
			s.log.Error("blob scrub quarantined corrupted blobs", "checked", rep.Checked, "quarantined", len(rep.Quarantined))
		default:
			s.log.Info("blob scrub finished", "checked", rep.Checked)
		}
	}
}
