//go:build !wasip1

package policies

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// UpstreamInput is the JSON form of an UpstreamRequest (policy eval
// --upstream; policies/README.md, Upstream versions).
type UpstreamInput struct {
	Method        string                       `json:"method"`
	Path          string                       `json:"path"`
	Headers       map[string]string            `json:"headers,omitempty"`
	Target        string                       `json:"targetDevice,omitempty"`
	UpstreamKnown bool                         `json:"upstreamKnown,omitempty"`
	Upstream      string                       `json:"upstream,omitempty"`
	PeerVersion   string                       `json:"peerVersion,omitempty"`
	HostMetadata  map[string]map[string]string `json:"hostMetadata,omitempty"`
	Now           string                       `json:"now,omitempty"`
}

// ParseUpstreamInput reads one upstream request object, strictly as
// ParseInput: exact member names, each once, strings as strings,
// upstreamKnown a boolean, method and path required, nothing after it.
func ParseUpstreamInput(data []byte) (*UpstreamInput, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	in := &UpstreamInput{}
	seen := map[string]bool{}
	err := readObject(dec, "upstream request", func(k string) error {
		if seen[k] {
			return fmt.Errorf("member %q given twice", k)
		}
		seen[k] = true
		switch k {
		case "method":
			return readString(dec, k, &in.Method)
		case "path":
			return readString(dec, k, &in.Path)
		case "headers":
			m, err := readStrings(dec, k, true)
			in.Headers = m
			return err
		case "targetDevice":
			return readString(dec, k, &in.Target)
		case "upstreamKnown":
			return readBool(dec, k, &in.UpstreamKnown)
		case "upstream":
			return readString(dec, k, &in.Upstream)
		case "peerVersion":
			return readString(dec, k, &in.PeerVersion)
		case "hostMetadata":
			in.HostMetadata = map[string]map[string]string{}
			return readObject(dec, k, func(f string) error {
				if _, dup := in.HostMetadata[f]; dup {
					return fmt.Errorf("hostMetadata: %q given twice", f)
				}
				m, err := readStrings(dec, "hostMetadata."+f, false)
				in.HostMetadata[f] = m
				return err
			})
		case "now":
			return readNow(dec, &in.Now)
		}
		return fmt.Errorf("unknown member %q (allowed: method, path, headers, targetDevice, upstreamKnown, upstream, peerVersion, hostMetadata, now)", k)
	})
	if err := endRequest(dec, err, seen, in.Path); err != nil {
		return nil, err
	}
	return in, nil
}

// Request converts the input to an UpstreamRequest.
func (in *UpstreamInput) Request() *UpstreamRequest {
	r := &UpstreamRequest{Method: in.Method, Path: in.Path, TargetDeviceID: in.Target, UpstreamKnown: in.UpstreamKnown,
		Upstream: in.Upstream, PeerVersion: in.PeerVersion}
	if in.Headers != nil {
		h := make(Map, len(in.Headers))
		for k, v := range in.Headers {
			h[strings.ToLower(k)] = v
		}
		r.Headers = h
	}
	if md := in.HostMetadata; md != nil {
		r.HostMetadata = func(f, k string) (string, bool) { v, ok := md[f][k]; return v, ok }
	}
	if in.Now != "" {
		if t, err := ParseInstant(in.Now); err == nil {
			r.Now = t.UnixNano()
		}
	}
	return r
}

// UpstreamDecisionJSON is the JSON form of an UpstreamDecision.
type UpstreamDecisionJSON struct {
	Allow        bool   `json:"allow"`
	Pending      bool   `json:"pending"`
	Rule         string `json:"rule"`
	Reason       string `json:"reason"`
	Version      string `json:"version"`
	DryRun       bool   `json:"dryRun"`
	DryRunRule   string `json:"dryRunRule,omitempty"`
	TargetDevice string `json:"targetDevice,omitempty"`
	Audit        bool   `json:"audit"`
}

// JSON converts d to its JSON form.
func (d *UpstreamDecision) JSON() UpstreamDecisionJSON {
	return UpstreamDecisionJSON{Allow: d.Allow, Pending: d.Pending, Rule: d.Rule, Reason: d.Reason, Version: d.Version,
		DryRun: d.DryRun, DryRunRule: d.DryRunRule, TargetDevice: d.TargetDevice, Audit: d.Audit}
}

// DecideUpstreamInput applies the path options (as the guard does), then
// decides; a path the options refuse is refused with its problem.
func DecideUpstreamInput(e *Engine, in *UpstreamInput, opt PathOptions, d *UpstreamDecision) {
	req := in.Request()
	if p, err := CanonicalPath(req.Path, opt); err == nil {
		req.Path = p
	}
	e.DecideUpstream(req, d)
}
