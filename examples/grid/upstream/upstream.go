// Package upstream holds the grid scenario's example services: a meter-data
// API and a DER (distributed energy resource) control API. They stand behind
// the dev proxy in `make demo` the way real workloads stand behind a sidecar,
// and they trust nothing but what the proxy lets through.
package upstream

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"sync"
	"time"
)

// Reading is one interval reading of a meter.
type Reading struct {
	Start time.Time `json:"start"`
	KWh   float64   `json:"kwh"`
}

// MeterAPI serves GET /v1/meters/{id}/readings with deterministic readings.
func MeterAPI() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/meters/{id}/readings", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		base := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
		out := make([]Reading, 4)
		for i := range out {
			out[i] = Reading{Start: base.Add(time.Duration(i) * 15 * time.Minute), KWh: math.Round((0.4+float64((len(id)+i)%5)/10)*100) / 100}
		}
		writeJSON(w, http.StatusOK, map[string]any{"meter": id, "readings": out})
	})
	return mux
}

// DERState is the controllable state of one DER.
type DERState struct {
	ID         string    `json:"id"`
	SetpointW  int       `json:"setpointWatts"`
	Curtailed  bool      `json:"curtailed"`
	LastChange time.Time `json:"lastChange"`
}

// DERAPI serves status reads and control writes for DERs.
type DERAPI struct {
	mu    sync.Mutex
	state map[string]*DERState
	now   func() time.Time
}

// NewDERAPI returns a DER API with empty state.
func NewDERAPI() *DERAPI { return &DERAPI{state: map[string]*DERState{}, now: time.Now} }

// Handler routes the DER API:
//
//	GET  /v1/inverters/{id}/status
//	POST /v1/inverters/{id}/setpoint  {"watts": N}
//	POST /v1/inverters/{id}/control   {"command": "curtail"|"release"}
func (d *DERAPI) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/inverters/{id}/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, d.get(r.PathValue("id")))
	})
	mux.HandleFunc("POST /v1/inverters/{id}/setpoint", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Watts *int `json:"watts"`
		}
		if err := decode(r, &in); err != nil || in.Watts == nil || *in.Watts < 0 || *in.Watts > 1_000_000 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "body must be {\"watts\": 0..1000000}"})
			return
		}
		writeJSON(w, http.StatusOK, d.update(r.PathValue("id"), func(s *DERState) { s.SetpointW = *in.Watts }))
	})
	mux.HandleFunc("POST /v1/inverters/{id}/control", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Command string `json:"command"`
		}
		if err := decode(r, &in); err != nil || (in.Command != "curtail" && in.Command != "release") {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "body must be {\"command\": \"curtail\"|\"release\"}"})
			return
		}
		writeJSON(w, http.StatusOK, d.update(r.PathValue("id"), func(s *DERState) { s.Curtailed = in.Command == "curtail" }))
	})
	return mux
}

func (d *DERAPI) get(id string) DERState {
	d.mu.Lock()
	defer d.mu.Unlock()
	if s, ok := d.state[id]; ok {
		return *s
	}
	return DERState{ID: id}
}

func (d *DERAPI) update(id string, f func(*DERState)) DERState {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.state[id]
	if !ok {
		s = &DERState{ID: id}
		d.state[id] = s
	}
	f(s)
	s.LastChange = d.now().UTC()
	return *s
}

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode body: %w", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
