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
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			msg = e.Error
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

// VerifyDecisionLog downloads the whole decision log and verifies its
// chain against the head the server reports.
func (c *Client) VerifyDecisionLog(ctx context.Context) (decisionlog.Report, error) {
	res, err := c.do(ctx, http.MethodGet, contract.DecisionsLogPath, nil, nil)
	if err != nil {
		return decisionlog.Report{}, err
	}
	defer res.Body.Close()
	seq, err := strconv.ParseUint(res.Header.Get(HeaderHeadSeq), 10, 64)
	if err != nil {
		return decisionlog.Report{}, errors.New("server sent no decision log head")
	}
	head := decisionlog.Head{Seq: seq, Hash: res.Header.Get(HeaderHeadHash)}
	var anchor decisionlog.Head
	if a := res.Header.Get(HeaderAnchorSeq); a != "" {
		if anchor.Seq, err = strconv.ParseUint(a, 10, 64); err != nil {
			return decisionlog.Report{}, errors.New("server sent a malformed retention anchor")
		}
		anchor.Hash = res.Header.Get(HeaderAnchorHash)
	}
	v := decisionlog.VerifierFrom(anchor)
	name := c.Base + contract.DecisionsLogPath
	if err := v.VerifyReader(name, res.Body); err != nil {
		return decisionlog.Report{}, err
	}
	if err := v.CheckHead("server head", head); err != nil {
		return decisionlog.Report{}, err
	}
	return decisionlog.Report{Pruned: anchor.Seq, Records: v.Count, Head: v.Head()}, nil
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
