package auth

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ProxyBinding says which proxies an uploader may post decision records
// for: a record's proxy field (the Envoy node id the guard reads from
// xds.node.id) must match Proxy when the authenticated identity matches
// Identity.
//
// Both are templates: "*" matches any run of characters, "{name}" one
// component (one or more characters other than '/', '~', '.' and '+'),
// the rest is literal. A name captured in Identity stands for the same
// text in Proxy (and everywhere it repeats in Identity). Identity is
// matched against the caller's SPIFFE ID and against "token:NAME" for
// its bearer token; an anonymous caller matches nothing.
//
//	identity: spiffe://cluster.local/ns/{ns}/sa/*
//	proxy:    sidecar~*~*.{ns}~{ns}.svc.cluster.local   (Istio node ids)
//	identity: token:{name}
//	proxy:    {name}
type ProxyBinding struct {
	Identity string `yaml:"identity"`
	Proxy    string `yaml:"proxy"`
}

// ProxyBindings are compiled bindings; the zero value binds nothing
// (and Check refuses every record), nil means no binding is configured.
type ProxyBindings struct {
	rules []proxyRule
}

type proxyRule struct {
	src      ProxyBinding
	identity *regexp.Regexp
	names    []string // capture group i+1 is names[i]
	proxy    []proxyPart
}

// proxyPart is a literal, a wildcard or a name of the proxy template.
type proxyPart struct {
	lit, name string
	star      bool
}

// ErrWrongProxy is wrapped by Check's refusals.
var ErrWrongProxy = errors.New("record claims a proxy its uploader may not post for")

const componentRE = `[^/~.+]+`

// CompileProxyBindings checks and compiles bindings.
func CompileProxyBindings(bs []ProxyBinding) (*ProxyBindings, error) {
	out := &ProxyBindings{}
	for i, b := range bs {
		if b.Identity == "" || b.Proxy == "" {
			return nil, fmt.Errorf("proxy binding %d: identity and proxy are both required", i+1)
		}
		for _, t := range []string{b.Identity, b.Proxy} {
			if !printable(t) {
				return nil, fmt.Errorf("proxy binding %d: %q is not printable UTF-8", i+1, t)
			}
		}
		if !strings.HasPrefix(b.Identity, "spiffe://") && !strings.HasPrefix(b.Identity, "token:") {
			return nil, fmt.Errorf("proxy binding %d: identity %q is neither a spiffe:// ID nor token:NAME template", i+1, b.Identity)
		}
		r := proxyRule{src: b}
		var re strings.Builder
		re.WriteString("^")
		seen := map[string]bool{}
		err := walkTemplate(b.Identity, func(lit, name string, star bool) {
			switch {
			case star:
				re.WriteString(".*")
			case name != "":
				re.WriteString("(" + componentRE + ")")
				r.names = append(r.names, name)
				seen[name] = true
			default:
				re.WriteString(regexp.QuoteMeta(lit))
			}
		})
		if err != nil {
			return nil, fmt.Errorf("proxy binding %d: identity: %w", i+1, err)
		}
		re.WriteString("$")
		r.identity = regexp.MustCompile(re.String())
		err = walkTemplate(b.Proxy, func(lit, name string, star bool) {
			r.proxy = append(r.proxy, proxyPart{lit: lit, name: name, star: star})
		})
		if err != nil {
			return nil, fmt.Errorf("proxy binding %d: proxy: %w", i+1, err)
		}
		for _, p := range r.proxy {
			if p.name != "" && !seen[p.name] {
				return nil, fmt.Errorf("proxy binding %d: proxy uses {%s}, which the identity %q does not capture", i+1, p.name, b.Identity)
			}
		}
		out.rules = append(out.rules, r)
	}
	return out, nil
}

// printable reports whether s is valid UTF-8 without control characters.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// walkTemplate splits a template into literals, "*" and "{name}".
func walkTemplate(t string, fn func(lit, name string, star bool)) error {
	for t != "" {
		switch i := strings.IndexAny(t, "*{}"); {
		case i < 0:
			fn(t, "", false)
			return nil
		case i > 0:
			fn(t[:i], "", false)
			t = t[i:]
		case t[0] == '*':
			fn("", "", true)
			t = t[1:]
		case t[0] == '}':
			return errors.New(`"}" without "{"`)
		default:
			end := strings.IndexByte(t, '}')
			if end < 0 {
				return errors.New(`"{" without "}"`)
			}
			name := t[1:end]
			if name == "" || strings.ContainsAny(name, "{*") {
				return fmt.Errorf("bad name {%s}", name)
			}
			fn("", name, false)
			t = t[end+1:]
		}
	}
	return nil
}

// names are what an identity is matched as.
func (id Identity) names() []string {
	var out []string
	if id.SPIFFEID != "" {
		out = append(out, id.SPIFFEID)
	}
	if id.Token != "" {
		out = append(out, "token:"+id.Token)
	}
	return out
}

// proxyRegexp is r's proxy template with the identity's captures filled in.
func (r proxyRule) proxyRegexp(captures map[string]string) *regexp.Regexp {
	var re strings.Builder
	re.WriteString("^")
	for _, p := range r.proxy {
		switch {
		case p.star:
			re.WriteString(".*")
		case p.name != "":
			re.WriteString(regexp.QuoteMeta(captures[p.name]))
		default:
			re.WriteString(regexp.QuoteMeta(p.lit))
		}
	}
	re.WriteString("$")
	return regexp.MustCompile(re.String())
}

// Matcher returns what id may claim: a function reporting whether a
// proxy value is one of id's (nil when no binding matches id at all).
func (b *ProxyBindings) Matcher(id Identity) func(proxy string) bool {
	var res []*regexp.Regexp
	for _, r := range b.rules {
		for _, n := range id.names() {
			if !utf8.ValidString(n) {
				continue
			}
			m := r.identity.FindStringSubmatch(n)
			if m == nil {
				continue
			}
			captures := map[string]string{}
			consistent := true
			for i, name := range r.names {
				if v, ok := captures[name]; ok && v != m[i+1] {
					consistent = false
				}
				captures[name] = m[i+1]
			}
			if consistent {
				res = append(res, r.proxyRegexp(captures))
			}
		}
	}
	if res == nil {
		return nil
	}
	return func(proxy string) bool {
		if !utf8.ValidString(proxy) {
			return false
		}
		for _, re := range res {
			if re.MatchString(proxy) {
				return true
			}
		}
		return false
	}
}

// Check decides whether id may post a record claiming proxy ("" when the
// record names none): nil, or an error wrapping ErrWrongProxy that says
// why.
func (b *ProxyBindings) Check(id Identity, proxy string) error {
	m := b.Matcher(id)
	switch {
	case m == nil:
		return fmt.Errorf("%w: %s matches no decisions.proxy_bindings identity, so it may post records for no proxy", ErrWrongProxy, id.Principal())
	case !utf8.ValidString(proxy):
		return fmt.Errorf("%w: the record's proxy is not valid UTF-8", ErrWrongProxy)
	case proxy == "":
		return fmt.Errorf("%w: the record names no proxy (its proxy field); %s must name the proxy it posts for", ErrWrongProxy, id.Principal())
	case !m(proxy):
		return fmt.Errorf("%w: proxy %q is not one %s may post for (decisions.proxy_bindings)", ErrWrongProxy, proxy, id.Principal())
	}
	return nil
}
