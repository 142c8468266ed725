package server

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/internal/buildinfo"
)

// TestBuildInfo: the distributor says which build it is, in its start log
// and as meshguard_build_info on /metrics.
func TestBuildInfo(t *testing.T) {
	var logs bytes.Buffer
	ts := startServer(t, testConfig(t), Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	bi := buildinfo.Get()
	r := do(t, nil, http.MethodGet, ts.URL+"/metrics", nil)
	require.Equal(t, http.StatusOK, r.Code)
	assert.Contains(t, string(r.Body), fmt.Sprintf(`meshguard_build_info{goversion=%q,revision=%q,version=%q} 1`, bi.GoVersion, bi.Commit, bi.Version))
	assert.Contains(t, logs.String(), fmt.Sprintf(`msg="meshguard distributor starting" version=%s commit=%s`, bi.Version, bi.Commit))
	assert.Contains(t, logs.String(), "go="+bi.GoVersion)
}
