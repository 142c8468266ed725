package server

import "net/http"

// storageHandlers builds the /v2/ (OCI distribution) and /modules/ handlers
// over the configured storage backend.
//
// TODO(mount): construct distributor/store, distributor/oci and
// distributor/modules here once those packages land.
func (s *Server) storageHandlers() (oci, modules http.Handler) {
	return nil, nil
}
