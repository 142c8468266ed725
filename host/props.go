package host

import (
	"encoding/binary"
	"strings"
	"time"
)

// Props holds properties (Envoy attributes) by path. Paths are written
// dotted ("connection.uri_san_peer_certificate") and stored with segments
// joined by NUL, the form modules send in proxy_get_property. Values use
// Envoy's encoding: strings raw, integers 8-byte little-endian, booleans one
// byte, timestamps and durations int64 nanoseconds, maps and lists in the
// header-pairs format.
type Props struct {
	m map[string][]byte
}

// NewProps returns an empty property set.
func NewProps() *Props { return &Props{m: map[string][]byte{}} }

func propKey(dotted string) string { return strings.ReplaceAll(dotted, ".", "\x00") }

// SetRaw sets an already encoded value at a path given as segments.
func (p *Props) SetRaw(segments []string, v []byte) *Props {
	p.m[strings.Join(segments, "\x00")] = v
	return p
}

// SetString sets a string attribute.
func (p *Props) SetString(path, v string) *Props { p.m[propKey(path)] = []byte(v); return p }

// SetBool sets a boolean attribute.
func (p *Props) SetBool(path string, v bool) *Props {
	b := []byte{0}
	if v {
		b[0] = 1
	}
	p.m[propKey(path)] = b
	return p
}

// SetInt sets an int64 attribute.
func (p *Props) SetInt(path string, v int64) *Props {
	p.m[propKey(path)] = binary.LittleEndian.AppendUint64(nil, uint64(v))
	return p
}

// SetUint sets a uint64 attribute.
func (p *Props) SetUint(path string, v uint64) *Props {
	p.m[propKey(path)] = binary.LittleEndian.AppendUint64(nil, v)
	return p
}

// SetTime sets a timestamp attribute (int64 nanoseconds since the epoch).
func (p *Props) SetTime(path string, v time.Time) *Props { return p.SetInt(path, v.UnixNano()) }

// SetDuration sets a duration attribute (int64 nanoseconds).
func (p *Props) SetDuration(path string, v time.Duration) *Props { return p.SetInt(path, int64(v)) }

// SetMap sets a map attribute in the header-pairs encoding.
func (p *Props) SetMap(path string, kv Headers) *Props {
	p.m[propKey(path)] = EncodePairs(nil, kv)
	return p
}

// SetPeer sets Istio (>= 1.24) peer metadata under filter_state.<which>
// (downstream_peer or upstream_peer): every field readable on its own
// (filter_state.downstream_peer.workload) and the whole Struct as a map.
// Fields: type, workload, name, cluster, namespace, service, revision, app,
// version, identity; labels go in the labels map.
func (p *Props) SetPeer(which string, fields map[string]string, labels map[string]string) *Props {
	base := "filter_state." + which
	var all Headers
	for _, k := range sortedKeys(fields) {
		p.SetString(base+"."+k, fields[k])
		all = append(all, [2]string{k, fields[k]})
	}
	if len(labels) > 0 {
		var l Headers
		for _, k := range sortedKeys(labels) {
			l = append(l, [2]string{k, labels[k]})
		}
		p.m[propKey(base+".labels")] = EncodePairs(nil, l)
		for _, kv := range l {
			p.SetRaw([]string{"filter_state", which, "labels", kv[0]}, []byte(kv[1]))
		}
	}
	p.m[propKey(base)] = EncodePairs(nil, all)
	return p
}

// Clone copies the set.
func (p *Props) Clone() *Props {
	c := NewProps()
	if p != nil {
		for k, v := range p.m {
			c.m[k] = v
		}
	}
	return c
}

func (p *Props) get(key string) ([]byte, bool) {
	if p == nil {
		return nil, false
	}
	v, ok := p.m[key]
	return v, ok
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j] < out[j-1]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// requestAttribute derives request.* and response.* attributes from the
// stream's headers, as Envoy does, when they were not set explicitly.
func (s *Stream) requestAttribute(key string) ([]byte, bool) {
	seg := strings.Split(key, "\x00")
	if len(seg) < 2 {
		return nil, false
	}
	switch seg[0] {
	case "request":
		h := s.reqHeaders
		if h == nil {
			return nil, false
		}
		get := func(k string) ([]byte, bool) {
			v, ok := h.Get(k)
			return []byte(v), ok
		}
		switch seg[1] {
		case "path":
			return get(":path")
		case "url_path":
			v, ok := h.Get(":path")
			if i := strings.IndexByte(v, '?'); i >= 0 {
				v = v[:i]
			}
			return []byte(v), ok
		case "query":
			v, ok := h.Get(":path")
			if i := strings.IndexByte(v, '?'); i >= 0 {
				return []byte(v[i+1:]), true
			}
			return []byte{}, ok
		case "host":
			return get(":authority")
		case "scheme":
			return get(":scheme")
		case "method":
			return get(":method")
		case "referer":
			return get("referer")
		case "useragent":
			return get("user-agent")
		case "id":
			return get("x-request-id")
		case "headers":
			if len(seg) == 3 {
				return get(seg[2])
			}
			return EncodePairs(nil, h), true
		}
	case "response":
		h := s.respHeaders
		if h == nil {
			return nil, false
		}
		switch seg[1] {
		case "code":
			v, ok := h.Get(":status")
			if !ok {
				return nil, false
			}
			var n int64
			for _, c := range v {
				if c < '0' || c > '9' {
					return nil, false
				}
				n = n*10 + int64(c-'0')
			}
			return binary.LittleEndian.AppendUint64(nil, uint64(n)), true
		case "headers":
			if len(seg) == 3 {
				v, ok := h.Get(seg[2])
				return []byte(v), ok
			}
			return EncodePairs(nil, h), true
		}
	}
	return nil, false
}

// Lookup returns the value set at a dotted attribute path (segments joined
// by "."), as the host hands it to a module.
func (p *Props) Lookup(path string) ([]byte, bool) { return p.get(propKey(path)) }
