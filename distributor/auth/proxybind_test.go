package auth

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var istioBindings = []ProxyBinding{
	{Identity: "spiffe://cluster.local/ns/{ns}/sa/*", Proxy: "sidecar~*~*.{ns}~{ns}.svc.cluster.local"},
	{Identity: "token:{name}", Proxy: "{name}"},
	{Identity: "spiffe://cluster.local/ns/gw/sa/{gw}", Proxy: "router~*~{gw}-*.gw~gw.svc.cluster.local"},
}

func TestProxyBindings(t *testing.T) {
	b, err := CompileProxyBindings(istioBindings)
	require.NoError(t, err)
	meter := Identity{SPIFFEID: "spiffe://cluster.local/ns/grid/sa/meter"}
	tests := []struct {
		name  string
		id    Identity
		proxy string
		ok    bool
	}{
		{"own namespace", meter, "sidecar~10.0.0.7~meter-0.grid~grid.svc.cluster.local", true},
		{"another namespace", meter, "sidecar~10.0.0.8~billing-0.billing~billing.svc.cluster.local", false},
		{"namespace only in the pod part", meter, "sidecar~10.0.0.8~x.grid~billing.svc.cluster.local", false},
		{"a suffix trick", meter, "sidecar~10.0.0.7~meter-0.grid~grid.svc.cluster.local.evil", false},
		{"a dotted namespace capture cannot stretch", Identity{SPIFFEID: "spiffe://cluster.local/ns/a.b/sa/x"}, "sidecar~1~p.a.b~a.b.svc.cluster.local", false},
		{"no proxy named", meter, "", false},
		{"per-proxy token", Identity{Token: "gw-7"}, "gw-7", true},
		{"another proxy's name with a token", Identity{Token: "gw-7"}, "gw-8", false},
		{"the token may not claim a sidecar", Identity{Token: "gw-7"}, "sidecar~10.0.0.7~meter-0.grid~grid.svc.cluster.local", false},
		{"gateway by its service account", Identity{SPIFFEID: "spiffe://cluster.local/ns/gw/sa/edge"}, "router~10.1.0.1~edge-5d9f.gw~gw.svc.cluster.local", true},
		{"gateway claiming another gateway", Identity{SPIFFEID: "spiffe://cluster.local/ns/gw/sa/edge"}, "router~10.1.0.1~core-5d9f.gw~gw.svc.cluster.local", false},
		{"anonymous", Identity{Remote: "10.0.0.9:4000"}, "sidecar~10.0.0.9~meter-0.grid~grid.svc.cluster.local", false},
		{"loopback is no identity", Identity{Loopback: true, Remote: "127.0.0.1:1"}, "x", false},
		{"another trust domain", Identity{SPIFFEID: "spiffe://other.td/ns/grid/sa/meter"}, "sidecar~1~p.grid~grid.svc.cluster.local", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := b.Check(tc.id, tc.proxy)
			if tc.ok {
				assert.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrWrongProxy)
		})
	}
	assert.Contains(t, b.Check(Identity{Remote: "10.0.0.9:4000"}, "p").Error(), "anonymous@10.0.0.9 matches no decisions.proxy_bindings identity")
	assert.Contains(t, b.Check(meter, "").Error(), "names no proxy")
	assert.Contains(t, b.Check(meter, "q").Error(), `proxy "q" is not one spiffe://cluster.local/ns/grid/sa/meter may post for`)

	// A repeated name in the identity must capture the same text.
	b2, err := CompileProxyBindings([]ProxyBinding{{Identity: "spiffe://td/ns/{x}/sa/{x}", Proxy: "{x}"}})
	require.NoError(t, err)
	assert.NoError(t, b2.Check(Identity{SPIFFEID: "spiffe://td/ns/a/sa/a"}, "a"))
	assert.Error(t, b2.Check(Identity{SPIFFEID: "spiffe://td/ns/a/sa/b"}, "a"))
	assert.Error(t, b2.Check(Identity{SPIFFEID: "spiffe://td/ns/a/sa/b"}, "b"))
}

// TestProxyBindingsOfTheGuides: the bindings istio/README.md and
// kuma/README.md document do what they say.
func TestProxyBindingsOfTheGuides(t *testing.T) {
	kuma, err := CompileProxyBindings([]ProxyBinding{
		{Identity: "spiffe://default/{app}_{ns}_svc_*", Proxy: "default.{app}-*.{ns}"},
		{Identity: "token:{name}", Proxy: "default.{name}"},
	})
	require.NoError(t, err)
	meter := Identity{SPIFFEID: "spiffe://default/meter_grid_svc_8080"}
	assert.NoError(t, kuma.Check(meter, "default.meter-7d9c-x2.grid"))
	assert.Error(t, kuma.Check(meter, "default.billing-7d9c-x2.grid"))
	assert.Error(t, kuma.Check(meter, "default.meter-7d9c-x2.billing"))
	assert.NoError(t, kuma.Check(Identity{Token: "dp-3"}, "default.dp-3"))
	assert.Error(t, kuma.Check(Identity{Token: "dp-3"}, "default.dp-4"))

	tokens, err := CompileProxyBindings([]ProxyBinding{{Identity: "token:{name}", Proxy: "*~{name}.*"}})
	require.NoError(t, err)
	assert.NoError(t, tokens.Check(Identity{Token: "meter-0"}, "sidecar~10.0.0.7~meter-0.grid~grid.svc.cluster.local"))
	assert.Error(t, tokens.Check(Identity{Token: "meter-0"}, "sidecar~10.0.0.7~meter-1.grid~grid.svc.cluster.local"))
}

func TestProxyBindingsRefuseBadTemplates(t *testing.T) {
	for _, b := range []ProxyBinding{
		{Identity: "", Proxy: "x"},
		{Identity: "spiffe://td/ns/{ns}", Proxy: ""},
		{Identity: "anonymous", Proxy: "x"},
		{Identity: "spiffe://td/ns/{ns", Proxy: "x"},
		{Identity: "spiffe://td/ns/ns}", Proxy: "x"},
		{Identity: "spiffe://td/ns/{}", Proxy: "x"},
		{Identity: "spiffe://td/ns/{ns}", Proxy: "{pod}"},
		{Identity: "token:{n}", Proxy: "{n"},
	} {
		_, err := CompileProxyBindings([]ProxyBinding{b})
		assert.Error(t, err, "%+v", b)
	}
}

// FuzzProxyBindings: any template compiles or is refused, and Check never
// admits a proxy for an identity no binding names.
func FuzzProxyBindings(f *testing.F) {
	f.Add("spiffe://cluster.local/ns/{ns}/sa/*", "sidecar~*~*.{ns}~{ns}.svc.cluster.local", "spiffe://cluster.local/ns/grid/sa/m", "sidecar~1~p.grid~grid.svc.cluster.local")
	f.Add("token:{n}", "{n}", "", "x")
	f.Add("spiffe://td/*", "*", "spiffe://td/a", "")
	f.Fuzz(func(t *testing.T, idT, proxyT, spiffe, proxy string) {
		b, err := CompileProxyBindings([]ProxyBinding{{Identity: idT, Proxy: proxyT}})
		if err != nil {
			return
		}
		if err := b.Check(Identity{Remote: "10.0.0.1:1"}, proxy); err == nil {
			t.Fatal("an anonymous caller was admitted")
		}
		if err := b.Check(Identity{SPIFFEID: spiffe}, ""); err == nil {
			t.Fatal("a record without a proxy was admitted")
		}
		_ = b.Check(Identity{SPIFFEID: spiffe, Token: proxy}, proxy)
	})
}
