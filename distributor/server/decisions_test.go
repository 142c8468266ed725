package server

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/decisionlog"
)

func decisionBatch(start, n int) []byte {
	var b strings.Builder
	b.WriteString("[")
	for i := start; i < start+n; i++ {
		if i > start {
			b.WriteString(",")
		}
		d := "allow"
		if i%4 == 0 {
			d = "deny"
		}
		fmt.Fprintf(&b, `{"time":%q,"decision_id":"%d","decision":%q,"rule_ids":["meter-read"],"reason":"ok","bundle_revision":3,`+
			`"subject":"spiffe://grid.example/ns/meters/sa/m%d","device_id":"lfdi-%d","device_class":"meter","version":"2.1.0",`+
			`"method":"GET","path":"/v1/readings","authority":"meter-api","proxy":"node-1","source":"10.0.0.%d:5000","vendor":{"fw":"x"}}`,
			time.Date(2026, 11, 23, 8, 0, i, 0, time.UTC).Format(time.RFC3339Nano), i, d, i%3, i, i%250)
	}
	b.WriteString("]")
	return []byte(b.String())
}

func TestDecisionIngestQueryExportVerify(t *testing.T) {
	ts := startServer(t, testConfig(t), Options{})
	r := do(t, nil, http.MethodPost, ts.URL+"/v1/decisions", decisionBatch(0, 50), "Content-Type", "application/json")
	require.Equal(t, http.StatusOK, r.Code, string(r.Body))
	var ir IngestResult
	r.json(t, &ir)
	assert.Equal(t, IngestResult{Accepted: 50, FirstSeq: 1, LastSeq: 50}, ir)

	// A retry of records already stored (an answer lost in a crash) is
	// acknowledged without storing them twice.
	r = do(t, &http.Client{Transport: &http.Transport{}}, http.MethodPost, ts.URL+"/v1/decisions", decisionBatch(40, 20), "Content-Type", "application/json")
	require.Equal(t, http.StatusOK, r.Code, string(r.Body))
	r.json(t, &ir)
	assert.Equal(t, IngestResult{Accepted: 10, Duplicates: 10, FirstSeq: 51, LastSeq: 60}, ir)

	nd := "{\"time\":\"2026-11-23T09:00:00Z\",\"decision\":\"dry-run-deny\",\"subject\":\"spiffe://grid.example/inverter\",\"x\":1}\n" +
		"{\"time\":\"2026-11-23T09:00:01Z\",\"decision\":\"error\"}\n"
	r = do(t, nil, http.MethodPost, ts.URL+"/v1/decisions", []byte(nd), "Content-Type", "application/x-ndjson")
	require.Equal(t, http.StatusOK, r.Code, string(r.Body))

	r = do(t, nil, http.MethodPost, ts.URL+"/v1/decisions", []byte(`[{"decision":"allow"}]`))
	assert.Equal(t, http.StatusBadRequest, r.Code)
	assert.Contains(t, string(r.Body), `record 0: field \"time\"`)

	r = do(t, nil, http.MethodGet, ts.URL+"/v1/decisions?decision=deny&subject=spiffe://grid.example/ns/meters/sa/m0&limit=2", nil)
	require.Equal(t, http.StatusOK, r.Code)
	var qr decisionlog.QueryResult
	r.json(t, &qr)
	require.Len(t, qr.Records, 2)
	assert.Contains(t, string(qr.Records[0]), `"decision_id":"0"`)
	assert.Contains(t, string(qr.Records[0]), `"vendor":{"fw":"x"}`)
	assert.Contains(t, string(qr.Records[0]), `"received_by":"anonymous@127.0.0.1"`, "no connection port: one client is one uploader")
	assert.Contains(t, string(qr.Records[0]), `"received_at":"`)
	assert.Contains(t, string(qr.Records[1]), `"decision_id":"12"`)
	assert.Equal(t, uint64(13), qr.Next)

	r = do(t, nil, http.MethodGet, ts.URL+"/v1/decisions?since=2026-11-23T09:00:00Z", nil)
	r.json(t, &qr)
	require.Len(t, qr.Records, 2)
	assert.Contains(t, string(qr.Records[0]), `"seq":61`)
	assert.Equal(t, http.StatusBadRequest, do(t, nil, http.MethodGet, ts.URL+"/v1/decisions?since=today", nil).Code)

	r = do(t, nil, http.MethodGet, ts.URL+"/v1/decisions/log", nil)
	require.Equal(t, http.StatusOK, r.Code)
	v, err := decisionlog.NewTreeVerifier(decisionlog.Anchor{})
	require.NoError(t, err)
	require.NoError(t, v.VerifyReader("export", bytes.NewReader(r.Body)))
	seq, _ := strconv.ParseUint(r.Header.Get(HeaderHeadSeq), 10, 64)
	assert.Equal(t, decisionlog.Head{Seq: seq, Hash: r.Header.Get(HeaderHeadHash)}, v.Head())
	assert.Equal(t, uint64(62), v.Count)

	// Offline verification of the files the server wrote.
	ts.stop()
	rep, err := verifyData(t, ts.cfg.Data)
	require.NoError(t, err)
	assert.Equal(t, uint64(62), rep.Records)
}

func TestDecisionRateAndSizeLimits(t *testing.T) {
	cfg := testConfig(t)
	cfg.Limits.IngestRate = 10
	cfg.Limits.IngestBurst = 100
	cfg.Limits.DecisionsBytes = 64 << 10
	ts := startServer(t, cfg, Options{})

	post := func(body []byte) resp { return do(t, nil, http.MethodPost, ts.URL+"/v1/decisions", body) }
	require.Equal(t, http.StatusOK, post(decisionBatch(0, 60)).Code)
	r := post(decisionBatch(60, 60))
	require.Equal(t, http.StatusTooManyRequests, r.Code, string(r.Body))
	ra, err := strconv.Atoi(r.Header.Get("Retry-After"))
	require.NoError(t, err)
	assert.InDelta(t, 2, ra, 1, "20 records short at 10/s")
	assert.Equal(t, http.StatusOK, post(decisionBatch(60, 40)).Code, "the rejected batch took no tokens")

	r = post(decisionBatch(0, 101))
	assert.Equal(t, http.StatusRequestEntityTooLarge, r.Code, "a batch above the burst can never pass")
	big := decisionBatch(0, 400)
	require.Greater(t, len(big), 64<<10)
	assert.Equal(t, http.StatusRequestEntityTooLarge, post(big).Code)
	assert.Equal(t, uint64(100), ts.dlog.Head().Seq)
}

// TestDecisionBytesRecordCapAndDiskWatermark: ingest is limited in bytes
// per identity (charged before the body is read when its length is
// known), one record is limited in size, and below the data directory's
// free-space watermark writes answer 507 while reads go on.
func TestDecisionBytesRecordCapAndDiskWatermark(t *testing.T) {
	cfg := testConfig(t)
	cfg.Limits.IngestRate = 0
	cfg.Limits.DecisionsBytes = 64 << 10
	cfg.Limits.IngestBytesRate = 1 << 10
	cfg.Limits.IngestBytesBurst = 64 << 10
	cfg.Decisions.MaxRecordBytes = 2 << 10
	ts := startServer(t, cfg, Options{})
	post := func(body []byte) resp { return do(t, nil, http.MethodPost, ts.URL+"/v1/decisions", body) }

	first := decisionBatch(0, 100)
	require.Less(t, len(first), 64<<10)
	require.Equal(t, http.StatusOK, post(first).Code)
	r := post(decisionBatch(100, 100))
	require.Equal(t, http.StatusTooManyRequests, r.Code, "the bucket holds %d bytes, %d were spent", 64<<10, len(first))
	assert.Contains(t, string(r.Body), "byte rate")
	assert.NotEmpty(t, r.Header.Get("Retry-After"))

	huge := fmt.Appendf(nil, `[{"time":"2026-11-23T08:00:00Z","decision":"deny","reason":%q}]`, strings.Repeat("x", 3<<10))
	r = post(huge) // the refused batch took no bytes: this one fits the bucket
	assert.Equal(t, http.StatusBadRequest, r.Code, string(r.Body))
	assert.Contains(t, string(r.Body), "at most 2048")

	// A watermark above the free space: writes 507, reads fine.
	ts.disk.mu.Lock()
	ts.disk.min = 1 << 62
	ts.disk.mu.Unlock()
	r = post(decisionBatch(200, 1))
	assert.Equal(t, http.StatusInsufficientStorage, r.Code, string(r.Body))
	assert.Equal(t, http.StatusInsufficientStorage, do(t, nil, http.MethodPost, ts.URL+"/v1/bundles/prod", []byte("x")).Code)
	r = do(t, nil, http.MethodPost, ts.URL+"/v2/filters/guard/blobs/uploads/", nil)
	assert.Equal(t, http.StatusInsufficientStorage, r.Code)
	assert.Contains(t, string(r.Body), `"errors"`)
	assert.Equal(t, http.StatusOK, do(t, nil, http.MethodGet, ts.URL+"/v1/decisions?limit=1", nil).Code)
	r = do(t, nil, http.MethodGet, ts.URL+"/readyz", nil) // (not ready here only for want of keys)
	assert.Contains(t, string(r.Body), `"disk":"data directory below its free-space watermark"`)
}
