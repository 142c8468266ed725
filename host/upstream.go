package host

import (
	"google.golang.org/protobuf/encoding/protowire"
)

// SetUpstreamHostMetadata sets Envoy's xds.upstream_host_metadata: the
// picked endpoint's metadata (envoy.config.core.v3.Metadata). As in Envoy,
// the attribute itself reads as the serialized Metadata message, and a
// longer path walks into it: filter_metadata, then the filter name, then
// a Struct field, which reads as its string value
// (xds.upstream_host_metadata.filter_metadata.envoy.lb.version, the
// filter name one path segment). Values are string Values.
func (p *Props) SetUpstreamHostMetadata(filters map[string]map[string]string) *Props {
	var msg []byte
	for _, f := range sortedKeys(stringKeys(filters)) {
		var st []byte // google.protobuf.Struct
		for _, k := range sortedKeys(filters[f]) {
			v := filters[f][k]
			p.SetRaw([]string{"xds", "upstream_host_metadata", "filter_metadata", f, k}, []byte(v))
			val := protowire.AppendTag(nil, 3, protowire.BytesType) // Value.string_value
			val = protowire.AppendString(val, v)
			entry := protowire.AppendTag(nil, 1, protowire.BytesType)
			entry = protowire.AppendString(entry, k)
			entry = protowire.AppendTag(entry, 2, protowire.BytesType)
			entry = protowire.AppendBytes(entry, val)
			st = protowire.AppendTag(st, 1, protowire.BytesType) // Struct.fields
			st = protowire.AppendBytes(st, entry)
		}
		entry := protowire.AppendTag(nil, 1, protowire.BytesType)
		entry = protowire.AppendString(entry, f)
		entry = protowire.AppendTag(entry, 2, protowire.BytesType)
		entry = protowire.AppendBytes(entry, st)
		msg = protowire.AppendTag(msg, 1, protowire.BytesType) // Metadata.filter_metadata
		msg = protowire.AppendBytes(msg, entry)
	}
	p.SetRaw([]string{"xds", "upstream_host_metadata"}, msg)
	return p
}

func stringKeys[V any](m map[string]V) map[string]string {
	out := make(map[string]string, len(m))
	for k := range m {
		out[k] = ""
	}
	return out
}

// SelectUpstream is Envoy's router picking the upstream host for the
// stream: from now on the stream's upstream attributes (upstream.address,
// upstream.uri_san_peer_certificate, xds.upstream_host_metadata,
// xds.cluster_name ...) and what Istio's metadata exchange sets for the
// upstream (filter_state.upstream_peer.*, see SetPeer) are readable. Before
// it, reading them gives NOT_FOUND, as in Envoy, where HTTP filters' request
// headers run before the router picks a host; drivers call it between
// RequestHeaders and ResponseHeaders (or before RequestHeaders to model an
// upstream HTTP filter, which runs after host selection). A second call
// replaces the set (a retry picked another host).
func (s *Stream) SelectUpstream(props *Props) {
	s.vm.run(func() { s.upstream = props.Clone() })
}
