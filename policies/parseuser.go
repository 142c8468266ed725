//go:build !wasip1

package policies

import (
	"encoding/json"
	"net/url"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/meshguard/meshguard/internal/jose"
)

// issuer parses an Issuer document.
func (p *parser) issuer(spec *yaml.Node, meta Meta) {
	f := p.fields(spec, "Issuer spec", "issuer", "audiences", "algorithms", "jwks", "header", "strictType", "leeway", "forwardedClaims")
	p.require(f, spec, "Issuer spec", "issuer", "audiences", "algorithms", "jwks")
	is := &Issuer{Meta: meta, URL: p.str(f["issuer"], "issuer"), StrictType: true, Leeway: DefaultIssuerLeeway}
	if n := f["issuer"]; n != nil && !issuerURL(is.URL) {
		p.errorf(n, "issuer %q is not an https URL without query or fragment", is.URL)
	}
	for _, a := range p.seq(f["audiences"], "audiences") {
		v := p.str(a, "audience")
		switch {
		case v == "":
			p.errorf(a, "audience must not be empty")
		case contains(is.Audiences, v):
			p.errorf(a, "audience %q given twice", v)
		default:
			is.Audiences = append(is.Audiences, v)
		}
	}
	if n := f["audiences"]; n != nil && len(is.Audiences) == 0 && n.Kind == yaml.SequenceNode {
		p.errorf(n, "audiences must name at least one audience")
	}
	for _, a := range p.seq(f["algorithms"], "algorithms") {
		v := p.str(a, "algorithm")
		switch {
		case !contains(IssuerAlgorithms, v):
			p.errorf(a, "algorithm %q not allowed (want one of %s; none and HMAC never are)", v, strings.Join(IssuerAlgorithms, ", "))
		case contains(is.Algorithms, v):
			p.errorf(a, "algorithm %q given twice", v)
		default:
			is.Algorithms = append(is.Algorithms, v)
		}
	}
	if n := f["algorithms"]; n != nil && len(is.Algorithms) == 0 && n.Kind == yaml.SequenceNode && len(n.Content) == 0 {
		p.errorf(n, "algorithms must name at least one algorithm")
	}
	if j := f["jwks"]; j != nil {
		if is.JWKS = p.jwks(j); is.JWKS != nil {
			set, err := jose.ParseKeySet(is.JWKS)
			switch {
			case err != nil:
				p.errorf(j, "jwks: %v", err)
				is.JWKS = nil
			case set.Len() == 0:
				p.errorf(j, "jwks holds no signature key")
				is.JWKS = nil
			}
		}
	}
	if h := f["header"]; h != nil {
		is.Header = strings.ToLower(p.str(h, "header"))
		if !validHeaderName(is.Header) || strings.HasPrefix(is.Header, ":") {
			p.errorf(h, "header %q is not a valid header name", is.Header)
		}
	}
	if st := f["strictType"]; st != nil {
		is.StrictType = p.boolean(st, "strictType")
	}
	if l := f["leeway"]; l != nil {
		d, err := parsePeriod(p.str(l, "leeway"))
		if s := p.str(l, "leeway"); s == "0s" || s == "0" {
			d, err = 0, nil
		}
		switch {
		case err != nil:
			p.errorf(l, "leeway: %v", err)
		case d > MaxIssuerLeeway:
			p.errorf(l, "leeway %s exceeds %s", d, MaxIssuerLeeway)
		default:
			is.Leeway = d
		}
	}
	seen := map[string]bool{}
	for _, fc := range p.seq(f["forwardedClaims"], "forwardedClaims") {
		ff := p.fields(fc, "forwarded claim", "claim", "header")
		p.require(ff, fc, "forwarded claim", "claim", "header")
		c := ForwardedClaim{Claim: p.str(ff["claim"], "claim"), Header: strings.ToLower(p.str(ff["header"], "header")), Pos: p.pos(fc)}
		switch {
		case ff["claim"] != nil && c.Claim == "":
			p.errorf(ff["claim"], "claim must not be empty")
		case ff["header"] != nil && (!validHeaderName(c.Header) || c.Header == DefaultUserHeader || c.Header == is.Header):
			p.errorf(ff["header"], "header %q is not a valid header name for a forwarded claim", c.Header)
		case seen[c.Header]:
			p.errorf(ff["header"], "header %q is given twice", c.Header)
		default:
			seen[c.Header] = true
			is.ForwardedClaims = append(is.ForwardedClaims, c)
		}
	}
	p.set.Issuers = append(p.set.Issuers, is)
}

// issuerURL reports whether s is an https URL with a host and without
// query, fragment or user information (RFC 8414 §2 issuer identifiers).
func issuerURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && u.Scheme == "https" && u.Host != "" && u.User == nil && u.RawQuery == "" && u.Fragment == "" &&
		!strings.ContainsAny(s, "?# \t")
}

// scopeToken reports whether s is an RFC 6749 §3.3 scope-token:
// 1*( %x21 / %x23-5B / %x5D-7E ).
func scopeToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// claimCondition parses {name, equals | contains | in}.
func (p *parser) claimCondition(n *yaml.Node) ClaimCondition {
	f := p.fields(n, "claim condition", "name", "equals", "contains", "in")
	p.require(f, n, "claim condition", "name")
	c := ClaimCondition{Name: p.str(f["name"], "claim name"), Pos: p.pos(n)}
	if f["name"] != nil && c.Name == "" {
		p.errorf(f["name"], "claim name must not be empty")
	}
	ops := 0
	if v := f["equals"]; v != nil {
		ops++
		c.Op, c.Values = ClaimEquals, []string{p.scalar(v, "equals")}
	}
	if v := f["contains"]; v != nil {
		ops++
		c.Op, c.Values = ClaimContains, []string{p.scalar(v, "contains")}
	}
	if v := f["in"]; v != nil {
		ops++
		c.Op, c.Values = ClaimIn, nil
		for _, e := range p.seq(v, "in") {
			c.Values = append(c.Values, p.scalar(e, "in entry"))
		}
		if v.Kind == yaml.SequenceNode && len(c.Values) == 0 {
			p.errorf(v, "in must list at least one value")
		}
	}
	if ops != 1 {
		p.errorf(n, "claim condition needs exactly one of equals, contains or in")
	}
	return c
}

// scalar reads a condition value: a string, a number (kept in its
// text) or a boolean (true or false).
func (p *parser) scalar(n *yaml.Node, what string) string {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		p.errorf(n, "%s must be a string, number or boolean", what)
		return ""
	}
	if n.Tag == "!!float" || n.Tag == "!!int" {
		if !jsonNumber(n.Value) {
			p.errorf(n, "%s: number %q is not in JSON form (quote it to compare a string)", what, n.Value)
		}
	}
	return n.Value
}

// userClaims reads a test input's end-user token claims as JSON values
// (numbers as json.Number).
func (p *parser) userClaims(n *yaml.Node) map[string]any {
	v, ok := p.yamlJSON(n, 0).(map[string]any)
	if !ok {
		p.errorf(n, "user must be a mapping (the end-user token's claims)")
		return nil
	}
	if err := CheckUserClaims(v); err != nil {
		p.errorf(n, "user: %v", err)
	}
	return v
}

func (p *parser) yamlJSON(n *yaml.Node, depth int) any {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if depth > maxValueDepth {
		p.errorf(n, "value nested too deeply")
		return nil
	}
	switch n.Kind {
	case yaml.MappingNode:
		m := map[string]any{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := p.str(n.Content[i], "claim name")
			if _, dup := m[k]; dup {
				p.errorf(n.Content[i], "claim %q given twice", k)
				continue
			}
			m[k] = p.yamlJSON(n.Content[i+1], depth+1)
		}
		return m
	case yaml.SequenceNode:
		l := []any{}
		for _, e := range n.Content {
			l = append(l, p.yamlJSON(e, depth+1))
		}
		return l
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return nil
		case "!!bool":
			return n.Value == "true"
		case "!!int", "!!float":
			if jsonNumber(n.Value) {
				return json.Number(n.Value)
			}
			if i, err := strconv.ParseInt(n.Value, 0, 64); err == nil {
				return json.Number(strconv.FormatInt(i, 10))
			}
			p.errorf(n, "number %q is not in JSON form", n.Value)
			return nil
		}
		return n.Value
	}
	p.errorf(n, "unsupported YAML value")
	return nil
}
