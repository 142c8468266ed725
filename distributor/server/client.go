package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/meshguard/meshguard/distributor/bundles"
	"github.com/meshguard/meshguard/distributor/decisionlog"
	"github.com/meshguard/meshguard/internal/contract"
	"golang.org/x/mod/sumdb/note"
)

// Client talks to a distributor (used by the CLI).
type Client struct {
	// Base is the distributor URL, e.g. https://distributor:8443.
	Base string
	// HTTP is the client to use (its transport carries the TLS config).
	HTTP *http.Client
	// Token is sent as a bearer token when set.
	Token string
}

// APIError is a non-success answer from the distributor.
type APIError struct {
	Code    int
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Code, http.StatusText(e.Code), e.Message)
}

func (c *Client) do(ctx context.Context, method, path string, body []byte, hdr map[string]string) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.Base, "/")+path, rd)
	if err != nil {
		return nil, err
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	res, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	if res.StatusCode >= 400 {
		defer res.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
		var e struct {
			Error  string `json:"error"`
			Fields []struct {
				Field   string `json:"field"`
				Message string `json:"message"`
			} `json:"fields"`
		}
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			msg = e.Error
			for i, f := range e.Fields {
				sep := "; "
				if i == 0 {
					sep = ": "
				}
				msg += sep + f.Field + ": " + f.Message
			}
		}
		return nil, &APIError{Code: res.StatusCode, Message: msg}
	}
	return res, nil
}

// PublishBundle uploads bundle bytes to a channel.
func (c *Client) PublishBundle(ctx context.Context, channel string, data []byte) (PublishResult, error) {
	var pr PublishResult
	res, err := c.do(ctx, http.MethodPost, contract.BundlesPath+"/"+url.PathEscape(channel), data,
		map[string]string{"Content-Type": bundles.MediaType})
	if err != nil {
		return pr, err
	}
	defer res.Body.Close()
	if err := json.NewDecoder(res.Body).Decode(&pr); err != nil {
		return pr, fmt.Errorf("publish answer: %w", err)
	}
	return pr, nil
}

// LatestCheckpoint fetches the latest signed checkpoint and verifies it
// against the log's verifier key.
func (c *Client) LatestCheckpoint(ctx context.Context, key note.Verifier) (decisionlog.Checkpoint, error) {
	return c.checkpoint(ctx, http.MethodGet, key)
}

// SignCheckpoint asks the distributor to sign a checkpoint now and
// verifies it.
func (c *Client) SignCheckpoint(ctx context.Context, key note.Verifier) (decisionlog.Checkpoint, error) {
	return c.checkpoint(ctx, http.MethodPost, key)
}

func (c *Client) checkpoint(ctx context.Context, method string, key note.Verifier) (decisionlog.Checkpoint, error) {
	res, err := c.do(ctx, method, contract.DecisionsCheckpointPath, nil, nil)
	if err != nil {
		return decisionlog.Checkpoint{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	if err != nil {
		return decisionlog.Checkpoint{}, fmt.Errorf("checkpoint: %w", err)
	}
	cp, err := decisionlog.OpenCheckpoint(b, key)
	if err != nil {
		return decisionlog.Checkpoint{}, fmt.Errorf("the distributor's checkpoint: %w", err)
	}
	return cp, nil
}

// InclusionProof fetches the inclusion proof of record seq in the tree of
// size records.
func (c *Client) InclusionProof(ctx context.Context, seq, size uint64) (decisionlog.InclusionProof, error) {
	var p decisionlog.InclusionProof
	err := c.getJSON(ctx, fmt.Sprintf("%s/%d?size=%d", contract.DecisionsProofPath, seq, size), &p)
	return p, err
}

// ConsistencyProof fetches the proof that the tree of from records is a
// prefix of the tree of size records.
func (c *Client) ConsistencyProof(ctx context.Context, from, size uint64) (decisionlog.ConsistencyProof, error) {
	var p decisionlog.ConsistencyProof
	err := c.getJSON(ctx, fmt.Sprintf("%s?from=%d&size=%d", contract.DecisionsConsistencyPath, from, size), &p)
	return p, err
}

func (c *Client) getJSON(ctx context.Context, path string, v any) error {
	res, err := c.do(ctx, http.MethodGet, path, nil, nil)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if err := json.NewDecoder(io.LimitReader(res.Body, 16<<20)).Decode(v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// VerifyConsistency holds the distributor to an earlier checkpoint: it
// fetches the latest checkpoint and the consistency proof between them and
// checks it with tlog.CheckTree. It returns the latest checkpoint.
func (c *Client) VerifyConsistency(ctx context.Context, key note.Verifier, earlier decisionlog.Checkpoint) (decisionlog.Checkpoint, error) {
	latest, err := c.LatestCheckpoint(ctx, key)
	if err != nil {
		return latest, err
	}
	var p decisionlog.ConsistencyProof
	if latest.Size > earlier.Size && earlier.Size > 0 {
		if p, err = c.ConsistencyProof(ctx, earlier.Size, latest.Size); err != nil {
			return latest, err
		}
		if p.From != earlier.Size || p.Size != latest.Size {
			return latest, fmt.Errorf("the distributor answered a proof of %d..%d for %d..%d", p.From, p.Size, earlier.Size, latest.Size)
		}
	}
	return latest, decisionlog.Consistent(earlier, latest, p.Proof)
}

// VerifyDecisionLog downloads the whole decision log, rebuilds its Merkle
// tree from the records and holds it to the latest signed checkpoint (and
// to the head the export reports).
func (c *Client) VerifyDecisionLog(ctx context.Context, key note.Verifier) (decisionlog.Report, error) {
	cp, err := c.LatestCheckpoint(ctx, key)
	if err != nil {
		return decisionlog.Report{}, err
	}
	res, err := c.do(ctx, http.MethodGet, contract.DecisionsLogPath, nil, nil)
	if err != nil {
		return decisionlog.Report{}, err
	}
	defer res.Body.Close()
	seq, err := strconv.ParseUint(res.Header.Get(HeaderHeadSeq), 10, 64)
	if err != nil {
		return decisionlog.Report{}, errors.New("server sent no decision log head")
	}
	var anchor decisionlog.Anchor
	if a := res.Header.Get(HeaderAnchor); a != "" {
		if err := json.Unmarshal([]byte(a), &anchor); err != nil {
			return decisionlog.Report{}, errors.New("server sent a malformed retention anchor")
		}
	}
	v, err := decisionlog.NewTreeVerifier(anchor, cp.Size)
	if err != nil {
		return decisionlog.Report{}, err
	}
	name := c.Base + contract.DecisionsLogPath
	if err := v.VerifyReader(name, res.Body); err != nil {
		return decisionlog.Report{}, err
	}
	if err := v.Check("latest checkpoint", cp); err != nil {
		return decisionlog.Report{}, err
	}
	if h := v.Head(); h.Seq != seq || h.Hash != res.Header.Get(HeaderHeadHash) {
		return decisionlog.Report{}, &decisionlog.ChainError{File: name, Problem: fmt.Sprintf("the records give a tree of %d with root %s, the server's head is %d with root %s",
			h.Seq, h.Hash, seq, res.Header.Get(HeaderHeadHash))}
	}
	ck := decisionlog.CheckpointReport{Origin: cp.Origin, Size: cp.Size, Root: cp.Root.String()}
	return decisionlog.Report{Pruned: anchor.Seq, Records: v.Count, Head: v.Head(), Checkpoint: &ck}, nil
}

// QueryDecisions runs one query page; params are the query string values
// (since, until, subject, decision, limit, after).
func (c *Client) QueryDecisions(ctx context.Context, params url.Values) (decisionlog.QueryResult, error) {
	var qr decisionlog.QueryResult
	res, err := c.do(ctx, http.MethodGet, contract.DecisionsPath+"?"+params.Encode(), nil, nil)
	if err != nil {
		return qr, err
	}
	defer res.Body.Close()
	if err := json.NewDecoder(res.Body).Decode(&qr); err != nil {
		return qr, fmt.Errorf("query answer: %w", err)
	}
	return qr, nil
}

// Status fetches the distributor's status (GET /v1/status; the audit action).
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	res, err := c.do(ctx, http.MethodGet, "/v1/status", nil, nil)
	if err != nil {
		return st, err
	}
	defer res.Body.Close()
	if err := json.NewDecoder(io.LimitReader(res.Body, 64<<20)).Decode(&st); err != nil {
		return st, fmt.Errorf("status answer: %w", err)
	}
	return st, nil
}
