package main

import (
	"errors"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/meshguard/meshguard/filters/guard/internal/decide"
	"github.com/meshguard/meshguard/filters/guard/internal/shared"
)

// hostShared is the host's shared data as a shared.Store.
type hostShared struct{}

func (hostShared) Get(key string) ([]byte, uint32, error) {
	v, cas, err := proxywasm.GetSharedData(key)
	if errors.Is(err, types.ErrorStatusNotFound) {
		return nil, 0, shared.ErrNotFound
	}
	return v, cas, err
}

func (hostShared) Set(key string, v []byte, cas uint32) error {
	err := proxywasm.SetSharedData(key, v, cas)
	if errors.Is(err, types.ErrorStatusCasMismatch) {
		return shared.ErrCASMismatch
	}
	return err
}

// hostLog is the proxy log as a decide.Logger.
type hostLog struct{}

func (hostLog) Log(level decide.Level, msg string) {
	switch level {
	case decide.LevelInfo:
		proxywasm.LogInfo(msg)
	case decide.LevelWarn:
		proxywasm.LogWarn(msg)
	case decide.LevelError:
		proxywasm.LogError(msg)
	default:
		proxywasm.LogCritical(msg)
	}
}
