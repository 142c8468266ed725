package host

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
)

// TestUpstreamHostMetadata: the whole attribute is the serialized Metadata
// message Envoy would hand over, and each leaf reads as its string.
func TestUpstreamHostMetadata(t *testing.T) {
	p := NewProps().SetUpstreamHostMetadata(map[string]map[string]string{
		"envoy.lb": {"version": "5.1.0", "kuma.io/service": "controller_der_svc_8080"},
		"istio":    {"workload": "controller-v5;der;controller;v5;Kubernetes"},
	})
	raw, ok := p.get(propKey("xds.upstream_host_metadata"))
	require.True(t, ok)
	var md corev3.Metadata
	require.NoError(t, proto.Unmarshal(raw, &md))
	assert.Equal(t, "5.1.0", md.GetFilterMetadata()["envoy.lb"].GetFields()["version"].GetStringValue())
	assert.Equal(t, "controller_der_svc_8080", md.GetFilterMetadata()["envoy.lb"].GetFields()["kuma.io/service"].GetStringValue())
	assert.Equal(t, "controller-v5;der;controller;v5;Kubernetes", md.GetFilterMetadata()["istio"].GetFields()["workload"].GetStringValue())
	v, ok := p.get("xds\x00upstream_host_metadata\x00filter_metadata\x00envoy.lb\x00version")
	require.True(t, ok)
	assert.Equal(t, "5.1.0", string(v))
	_, ok = p.get("xds\x00upstream_host_metadata\x00filter_metadata\x00envoy\x00lb\x00version")
	assert.False(t, ok, "the filter name is one segment")
}
