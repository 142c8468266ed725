package server

import (
	"fmt"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// diskWatch reports the free space of the data directory, re-read at most
// every quarter second.
type diskWatch struct {
	dir string
	min int64

	mu      sync.Mutex
	checked time.Time
	free    int64
	err     error
}

func (d *diskWatch) freeBytes() (int64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if time.Since(d.checked) < 250*time.Millisecond {
		return d.free, d.err
	}
	var st syscall.Statfs_t
	d.err = syscall.Statfs(d.dir, &st)
	d.free = int64(st.Bavail) * int64(st.Bsize)
	d.checked = time.Now()
	return d.free, d.err
}

// low reports whether the data directory is below its watermark.
func (d *diskWatch) low() (bool, int64) {
	if d == nil || d.min <= 0 {
		return false, 0
	}
	free, err := d.freeBytes()
	return err == nil && free < d.min, free
}

// diskOK refuses a write with 507 while the data directory is below its
// free-space watermark: what is stored stays consistent and readable, and
// reads go on.
func (s *Server) diskOK(w http.ResponseWriter, r *http.Request, route string) bool {
	low, free := s.disk.low()
	if !low {
		return true
	}
	s.m.rejected.WithLabelValues(route, "disk_full").Inc()
	w.Header().Set("Retry-After", "60")
	s.refuse(w, r, route, http.StatusInsufficientStorage,
		fmt.Sprintf("the distributor's data directory has %d bytes free, below its limit of %d; writes are refused until space is freed", free, s.disk.min))
	return false
}

// diskGuard applies diskOK to the writes of a storage route.
func (s *Server) diskGuard(route string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodPost, http.MethodPut, http.MethodPatch:
			if !s.diskOK(w, r, route) {
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}
