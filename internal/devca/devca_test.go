package devca

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var td = spiffeid.RequireTrustDomainFromString("grid.example")

func TestX509SVIDVerifiesAgainstBundle(t *testing.T) {
	ca, err := New(td)
	require.NoError(t, err)
	id := spiffeid.RequireFromPath(td, "/ns/grid/sa/meter-reader")
	svid, err := ca.IssueX509SVID(id, X509Options{TTL: time.Minute})
	require.NoError(t, err)
	gotID, _, err := x509svid.Verify(svid.Certificates, ca.X509Bundle())
	require.NoError(t, err)
	assert.Equal(t, id, gotID)

	other, err := New(spiffeid.RequireTrustDomainFromString("other.example"))
	require.NoError(t, err)
	_, _, err = x509svid.Verify(svid.Certificates, other.X509Bundle())
	assert.Error(t, err, "an SVID must not verify against a foreign trust domain")

	_, err = ca.IssueX509SVID(spiffeid.RequireFromString("spiffe://other.example/x"), X509Options{})
	assert.ErrorContains(t, err, "not in trust domain")
}

func TestMTLSWithIssuedSVIDs(t *testing.T) {
	ca, err := New(td)
	require.NoError(t, err)
	serverID := spiffeid.RequireFromPath(td, "/ns/grid/sa/meter-api")
	clientID := spiffeid.RequireFromPath(td, "/ns/grid/sa/billing")
	serverSVID, err := ca.IssueX509SVID(serverID, X509Options{})
	require.NoError(t, err)
	clientSVID, err := ca.IssueX509SVID(clientID, X509Options{})
	require.NoError(t, err)

	ln, err := tls.Listen("tcp", "127.0.0.1:0", tlsconfig.MTLSServerConfig(serverSVID, ca.X509Bundle(), tlsconfig.AuthorizeAny()))
	require.NoError(t, err)
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := x509svid.IDFromCert(r.TLS.PeerCertificates[0])
		if err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		_, _ = io.WriteString(w, id.String())
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	url := "https://" + ln.Addr().String()

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsconfig.MTLSClientConfig(clientSVID, ca.X509Bundle(), tlsconfig.AuthorizeID(serverID))}}
	resp, err := client.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	assert.Equal(t, clientID.String(), string(body))

	// A client without a certificate is refused by the server's handshake.
	bare := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // the point of the test
	_, err = bare.Get(url)
	assert.Error(t, err)
}

func TestJWTSVIDParsesWithGoSpiffe(t *testing.T) {
	ca, err := New(td)
	require.NoError(t, err)
	id := spiffeid.RequireFromPath(td, "/ns/grid/sa/der-controller")
	tok, err := ca.IssueJWTSVID(id, []string{"grid.example/der-api"}, JWTOptions{ID: "t-1", Claims: map[string]any{"swversion": "2.3.1"}})
	require.NoError(t, err)
	svid, err := jwtsvid.ParseAndValidate(tok, ca.JWTBundle(), []string{"grid.example/der-api"})
	require.NoError(t, err)
	assert.Equal(t, id, svid.ID)
	assert.Equal(t, "2.3.1", svid.Claims["swversion"])
	assert.Equal(t, "t-1", svid.Claims["jti"])

	_, err = jwtsvid.ParseAndValidate(tok, ca.JWTBundle(), []string{"grid.example/other"})
	assert.Error(t, err, "wrong audience must fail")
	_, err = ca.IssueJWTSVID(id, nil, JWTOptions{})
	assert.Error(t, err, "no audience must be refused")

	doc, err := ca.JWKS()
	require.NoError(t, err)
	var set jwksKeys
	require.NoError(t, json.Unmarshal(doc, &set))
	assert.Len(t, set.Keys, 1)
}

func TestSaveLoadRoundTrip(t *testing.T) {
	ca, err := New(td)
	require.NoError(t, err)
	dir := filepath.Join(t.TempDir(), "ca")
	require.NoError(t, ca.Save(dir))
	loaded, err := Load(dir)
	require.NoError(t, err)
	assert.Equal(t, td, loaded.TrustDomain())
	assert.True(t, loaded.Certificate().Equal(ca.Certificate()))

	id := spiffeid.RequireFromPath(td, "/w")
	svid, err := loaded.IssueX509SVID(id, X509Options{})
	require.NoError(t, err)
	_, _, err = x509svid.Verify(svid.Certificates, ca.X509Bundle())
	require.NoError(t, err, "an SVID from the loaded CA verifies against the original bundle")
	tok, err := loaded.IssueJWTSVID(id, []string{"a"}, JWTOptions{})
	require.NoError(t, err)
	_, err = jwtsvid.ParseAndValidate(tok, ca.JWTBundle(), []string{"a"})
	require.NoError(t, err)

	cf, kf := filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid.key")
	require.NoError(t, WriteSVID(svid, cf, kf))
	back, err := x509svid.Load(cf, kf)
	require.NoError(t, err)
	assert.Equal(t, id, back.ID)

	_, err = Load(t.TempDir())
	assert.Error(t, err)
}

// jwksKeys checks the JWKS document shape.
type jwksKeys struct {
	Keys []json.RawMessage `json:"keys"`
}
