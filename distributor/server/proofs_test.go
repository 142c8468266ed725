package server

import (
	"crypto/sha256"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/meshguard/meshguard/distributor/decisionlog"
	"github.com/meshguard/meshguard/distributor/internal/decisiongen"
)

// TestProofsVerifyWithTheLibrary: every inclusion and consistency proof
// the distributor serves verifies with x/mod/sumdb/tlog's own CheckRecord
// and CheckTree against checkpoints opened with note.Open, the leaf hash
// recomputed with crypto/sha256 from the record as served (RFC 6962:
// SHA-256 of 0x00 and the record's RFC 8785 bytes).
func TestProofsVerifyWithTheLibrary(t *testing.T) {
	ts, _ := consoleServer(t)
	key := ts.DecisionLog().Key().Public
	// The key served is the one the distributor signs with.
	r := do(t, nil, http.MethodGet, ts.URL+"/v1/decisions/checkpoint/key", nil, bearer(auditorToken)...)
	require.Equal(t, http.StatusOK, r.Code)
	assert.Equal(t, key+"\n", string(r.Body))
	v, err := note.NewVerifier(key)
	require.NoError(t, err)

	type cp struct {
		size uint64
		root tlog.Hash
	}
	var cps []cp
	sizes := []int{1, 2, 3, 7, 8, 9, 64, 100, 137}
	done := 0
	for _, n := range sizes {
		r := do(t, nil, http.MethodPost, ts.URL+"/v1/decisions", decisiongen.Batch(done, n-done, consoleBase, time.Second), bearer(guardToken)...)
		require.Equal(t, http.StatusOK, r.Code, string(r.Body))
		done = n
		r = do(t, nil, http.MethodPost, ts.URL+"/v1/decisions/checkpoint", nil, bearer(auditorToken)...)
		require.Equal(t, http.StatusOK, r.Code, string(r.Body))
		nt, err := note.Open(r.Body, note.VerifierList(v))
		require.NoError(t, err)
		lines := strings.Split(nt.Text, "\n")
		require.Len(t, lines, 4, "origin, size, root and the final newline")
		assert.Equal(t, "meshguard/decisions", lines[0])
		assert.Equal(t, fmt.Sprint(n), lines[1])
		root, err := tlog.ParseHash(lines[2])
		require.NoError(t, err)
		cps = append(cps, cp{uint64(n), root})
		// GET answers the latest.
		g := do(t, nil, http.MethodGet, ts.URL+"/v1/decisions/checkpoint", nil, bearer(auditorToken)...)
		assert.Equal(t, r.Body, g.Body)
	}

	for _, c := range cps {
		for seq := uint64(1); seq <= c.size; seq++ {
			var p decisionlog.InclusionProof
			getJSON(t, fmt.Sprintf("%s/v1/decisions/proof/%d?size=%d", ts.URL, seq, c.size), &p)
			leaf := tlog.Hash(sha256.Sum256(append([]byte{0}, p.Record...)))
			assert.Contains(t, p.Record, fmt.Sprintf(`"seq":%d`, seq))
			require.NoError(t, tlog.CheckRecord(p.Proof, int64(c.size), c.root, int64(seq-1), leaf), "seq %d in %d", seq, c.size)
			// The same proof does not prove another position or record.
			if c.size > 1 {
				assert.Error(t, tlog.CheckRecord(p.Proof, int64(c.size), c.root, int64(seq%c.size), leaf))
			}
			assert.Error(t, tlog.CheckRecord(p.Proof, int64(c.size), c.root, int64(seq-1), tlog.RecordHash([]byte(p.Record+" "))))
		}
	}
	for i, a := range cps {
		for _, b := range cps[i:] {
			var p decisionlog.ConsistencyProof
			getJSON(t, fmt.Sprintf("%s/v1/decisions/consistency?from=%d&size=%d", ts.URL, a.size, b.size), &p)
			require.NoError(t, tlog.CheckTree(p.Proof, int64(b.size), b.root, int64(a.size), a.root), "%d to %d", a.size, b.size)
			if a.size < b.size {
				other := a.root
				other[0] ^= 1
				assert.Error(t, tlog.CheckTree(p.Proof, int64(b.size), b.root, int64(a.size), other))
			}
		}
	}

	// Bad requests are refused with a reason.
	for path, code := range map[string]int{
		"/v1/decisions/proof/0":                      http.StatusBadRequest,
		"/v1/decisions/proof/x":                      http.StatusBadRequest,
		"/v1/decisions/proof/5?size=3":               http.StatusNotFound,
		"/v1/decisions/proof/5?size=9999":            http.StatusNotFound,
		"/v1/decisions/proof/5?size=9&size=10":       http.StatusBadRequest,
		"/v1/decisions/proof/5?sise=9":               http.StatusBadRequest,
		"/v1/decisions/consistency?size=9":           http.StatusBadRequest,
		"/v1/decisions/consistency?from=10&size=9":   http.StatusNotFound,
		"/v1/decisions/consistency?from=1&size=1000": http.StatusNotFound,
	} {
		r := do(t, nil, http.MethodGet, ts.URL+path, nil, bearer(auditorToken)...)
		assert.Equal(t, code, r.Code, "%s: %s", path, r.Body)
	}
	// Proofs, checkpoints and signing need the audit action.
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		r := do(t, nil, m, ts.URL+"/v1/decisions/checkpoint", nil, bearer(guardToken)...)
		assert.Equal(t, http.StatusForbidden, r.Code, m)
	}
	r = do(t, nil, http.MethodGet, ts.URL+"/v1/decisions/proof/1", nil, bearer(readerToken)...)
	assert.Equal(t, http.StatusForbidden, r.Code)
}
