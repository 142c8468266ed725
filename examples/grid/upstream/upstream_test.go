package upstream

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMeterAPI(t *testing.T) {
	srv := httptest.NewServer(MeterAPI())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/v1/meters/mtr-0042/readings")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var out struct {
		Meter    string    `json:"meter"`
		Readings []Reading `json:"readings"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	assert.Equal(t, "mtr-0042", out.Meter)
	assert.Len(t, out.Readings, 4)

	resp2, err := http.Post(srv.URL+"/v1/meters/mtr-0042/readings", "application/json", nil)
	require.NoError(t, err)
	resp2.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, resp2.StatusCode)
}

func TestDERAPI(t *testing.T) {
	srv := httptest.NewServer(NewDERAPI().Handler())
	defer srv.Close()
	cases := []struct {
		name, method, path, body string
		code                     int
		check                    func(t *testing.T, s DERState)
	}{
		{"initial status", "GET", "/v1/inverters/inv-7/status", "", 200, func(t *testing.T, s DERState) { assert.Equal(t, "inv-7", s.ID) }},
		{"setpoint", "POST", "/v1/inverters/inv-7/setpoint", `{"watts": 4200}`, 200, func(t *testing.T, s DERState) { assert.Equal(t, 4200, s.SetpointW) }},
		{"setpoint out of range", "POST", "/v1/inverters/inv-7/setpoint", `{"watts": -1}`, 400, nil},
		{"setpoint unknown field", "POST", "/v1/inverters/inv-7/setpoint", `{"watt": 1}`, 400, nil},
		{"curtail", "POST", "/v1/inverters/inv-7/control", `{"command":"curtail"}`, 200, func(t *testing.T, s DERState) { assert.True(t, s.Curtailed) }},
		{"bad command", "POST", "/v1/inverters/inv-7/control", `{"command":"explode"}`, 400, nil},
		{"state kept", "GET", "/v1/inverters/inv-7/status", "", 200, func(t *testing.T, s DERState) {
			assert.Equal(t, 4200, s.SetpointW)
			assert.True(t, s.Curtailed)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
			require.NoError(t, err)
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			require.Equal(t, tc.code, resp.StatusCode)
			if tc.check != nil {
				var s DERState
				require.NoError(t, json.NewDecoder(resp.Body).Decode(&s))
				tc.check(t, s)
			}
		})
	}
}
