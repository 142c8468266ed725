package server

import (
	"errors"
	"fmt"
	"net/http"
	"path/filepath"

	"github.com/meshguard/meshguard/distributor/modules"
	"github.com/meshguard/meshguard/distributor/oci"
	"github.com/meshguard/meshguard/distributor/store"
)

// storageHandlers builds the /v2/ (OCI distribution) handler and the
// /modules/ plain-HTTP module handler over the configured storage backend.
func (s *Server) storageHandlers() (ociHandler, modulesHandler http.Handler, err error) {
	var st store.Store
	switch s.cfg.Storage.Backend {
	case "", "filesystem":
		fs, err := store.OpenFS(filepath.Join(s.cfg.Data, "oci"))
		if err != nil {
			return nil, nil, err
		}
		st = fs
	case "oci":
		return nil, nil, errors.New("storage.backend oci (an external registry) is not available in this build; use filesystem")
	default:
		return nil, nil, fmt.Errorf("storage.backend %q: want filesystem or oci", s.cfg.Storage.Backend)
	}
	s.store = st
	h := oci.NewHandler(st, oci.Options{
		AllowDelete:  s.cfg.Storage.AllowDelete,
		MaxBlobBytes: int64(s.cfg.Limits.ModuleBytes),
		Logger:       s.log,
		Metrics:      s.m.reg,
	})
	return h, modules.NewHTTPHandler(st, modules.HTTPOptions{Logger: s.log}), nil
}
