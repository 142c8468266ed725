package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

	"github.com/meshguard/meshguard/distributor/registry"
)

// registryPath is an entry's path (the id escaped into one segment).
func registryPath(kind registry.Kind, id string) string {
	p := registry.Path + "/" + string(kind)
	if id != "" {
		p += "/" + url.PathEscape(id)
	}
	return p
}

func (c *Client) registryDo(ctx context.Context, method, path string, body []byte, hdr map[string]string, out any) error {
	if body != nil {
		if hdr == nil {
			hdr = map[string]string{}
		}
		if hdr["Content-Type"] == "" {
			hdr["Content-Type"] = "application/json"
		}
	}
	res, err := c.do(ctx, method, path, body, hdr)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(res.Body).Decode(out); err != nil {
		return fmt.Errorf("registry answer: %w", err)
	}
	return nil
}

// RegistryCreate registers an entry (body: a Workload or Device as JSON).
func (c *Client) RegistryCreate(ctx context.Context, kind registry.Kind, body []byte) (registry.Record, error) {
	var rec registry.Record
	return rec, c.registryDo(ctx, http.MethodPost, registryPath(kind, ""), body, nil, &rec)
}

// RegistryGet fetches an entry.
func (c *Client) RegistryGet(ctx context.Context, kind registry.Kind, id string) (registry.Record, error) {
	var rec registry.Record
	return rec, c.registryDo(ctx, http.MethodGet, registryPath(kind, id), nil, nil, &rec)
}

// RegistryUpdate replaces an entry whose ETag is etag.
func (c *Client) RegistryUpdate(ctx context.Context, kind registry.Kind, id, etag string, body []byte) (registry.Record, error) {
	var rec registry.Record
	return rec, c.registryDo(ctx, http.MethodPut, registryPath(kind, id), body, map[string]string{"If-Match": etag}, &rec)
}

// RegistryDelete deregisters an entry (etag "": whatever its generation).
func (c *Client) RegistryDelete(ctx context.Context, kind registry.Kind, id, etag string) error {
	var hdr map[string]string
	if etag != "" {
		hdr = map[string]string{"If-Match": etag}
	}
	return c.registryDo(ctx, http.MethodDelete, registryPath(kind, id), nil, hdr, nil)
}

// RegistryList fetches one page of entries (q: limit, page_token, prefix,
// class, vendor, label).
func (c *Client) RegistryList(ctx context.Context, kind registry.Kind, q url.Values) (registry.Page, error) {
	var p registry.Page
	path := registryPath(kind, "")
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	return p, c.registryDo(ctx, http.MethodGet, path, nil, nil, &p)
}

// AttestNonce asks for a single-use nonce for a registered device.
func (c *Client) AttestNonce(ctx context.Context, deviceID string) (registry.NonceResponse, error) {
	var n registry.NonceResponse
	body, _ := json.Marshal(registry.NonceRequest{DeviceID: deviceID})
	return n, c.registryDo(ctx, http.MethodPost, registry.AttestNoncePath, body, nil, &n)
}

// Attest sends a device's compact JWS over its nonce and returns the
// device token.
func (c *Client) Attest(ctx context.Context, compact []byte) (registry.TokenResponse, error) {
	var t registry.TokenResponse
	return t, c.registryDo(ctx, http.MethodPost, registry.AttestPath, compact, map[string]string{"Content-Type": "application/jose"}, &t)
}
