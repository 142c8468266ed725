package host

import (
	"encoding/binary"
	"math"
	"sort"
)

// JWTAuthnFilter is the dynamic metadata namespace of Envoy's jwt_authn
// filter.
const JWTAuthnFilter = "envoy.filters.http.jwt_authn"

// SetJWTAuthnPayload presents a payload Envoy's jwt_authn filter verified
// and stored with payload_in_metadata key, as Envoy hands dynamic
// metadata to Proxy-Wasm: the property
// metadata.filter_metadata["envoy.filters.http.jwt_authn"][key] (path
// segments metadata, filter_metadata, the filter name, key) is the
// payload Struct as a map in the header-pairs format, and each member is
// readable on its own one segment further. A Struct member is a
// google.protobuf.Value, which CEL hands on as its kind: strings raw,
// numbers (always doubles) 8-byte little-endian IEEE 754, booleans one
// byte; lists and nested objects are not encoded here (the guard does not
// read them).
func (p *Props) SetJWTAuthnPayload(key string, payload map[string]any) *Props {
	base := []string{"metadata", "filter_metadata", JWTAuthnFilter, key}
	names := make([]string, 0, len(payload))
	for k := range payload {
		names = append(names, k)
	}
	sort.Strings(names)
	var all Headers
	for _, k := range names {
		var v []byte
		switch x := payload[k].(type) {
		case string:
			v = []byte(x)
		case float64:
			v = binary.LittleEndian.AppendUint64(nil, math.Float64bits(x))
		case int:
			v = binary.LittleEndian.AppendUint64(nil, math.Float64bits(float64(x)))
		case int64:
			v = binary.LittleEndian.AppendUint64(nil, math.Float64bits(float64(x)))
		case bool:
			v = []byte{0}
			if x {
				v[0] = 1
			}
		default:
			continue
		}
		p.SetRaw(append(append([]string{}, base...), k), v)
		all = append(all, [2]string{k, string(v)})
	}
	p.SetRaw(base, EncodePairs(nil, all))
	return p
}
