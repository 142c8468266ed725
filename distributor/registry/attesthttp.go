package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Attestation paths.
const (
	AttestPath      = Path + "/attest"
	AttestNoncePath = AttestPath + "/nonce"
	AttestKeysPath  = AttestPath + "/jwks.json"
)

// NonceRequest asks for a nonce; NonceResponse is the answer.
type NonceRequest struct {
	DeviceID string `json:"device_id"`
}

// NonceResponse is a single-use nonce and when it expires.
type NonceResponse struct {
	Nonce   string    `json:"nonce"`
	Expires time.Time `json:"expires"`
}

// TokenResponse is an issued device token.
type TokenResponse struct {
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
}

// AttestHandlers are the attestation endpoints: nonce, attest (body: the
// compact JWS) and the token verification keys. record gets every
// attestation, issued or refused; when it fails no token is handed out.
func AttestHandlers(a *Attestor, record func(*http.Request, AttestEvent) error) (nonceH, attestH, keysH http.HandlerFunc) {
	nonceH = func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 4<<10))
		if err != nil {
			writeErr(w, http.StatusRequestEntityTooLarge, "body too large", nil)
			return
		}
		var req NonceRequest
		if err := decodeStrict(b, &req); err != nil || req.DeviceID == "" {
			writeErr(w, http.StatusBadRequest, "want {\"device_id\": ID}", nil)
			return
		}
		n, exp, err := a.Nonce(r.Context(), req.DeviceID)
		if err != nil {
			// The same answer for unknown devices and a full table, so
			// the endpoint does not list the registry.
			writeErr(w, http.StatusForbidden, "no nonce for this device", nil)
			return
		}
		writeJSON(w, http.StatusOK, NonceResponse{Nonce: n, Expires: exp})
	}
	attestH = func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 16<<10))
		if err != nil {
			writeErr(w, http.StatusRequestEntityTooLarge, "body too large", nil)
			return
		}
		tok, exp, ev, err := a.Attest(r.Context(), b)
		if rerr := record(r, ev); rerr != nil {
			writeErr(w, http.StatusInternalServerError, "attestation could not be recorded; no token issued", nil)
			return
		}
		if err != nil {
			code := http.StatusForbidden
			if !errors.Is(err, ErrAttestation) {
				code = http.StatusInternalServerError
			}
			writeErr(w, code, err.Error(), nil)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		writeJSON(w, http.StatusOK, TokenResponse{Token: tok, Expires: exp})
	}
	keysH = func(w http.ResponseWriter, r *http.Request) {
		b, err := json.Marshal(a.Keys())
		if err != nil {
			writeErr(w, http.StatusInternalServerError, fmt.Sprint(err), nil)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(b)
	}
	return nonceH, attestH, keysH
}
