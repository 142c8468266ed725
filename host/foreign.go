package host

import (
	"bytes"
	"compress/zlib"
	"io"
)

// maxUncompressed bounds what the uncompress foreign function inflates, so a
// tiny zlib bomb cannot exhaust the host.
const maxUncompressed = 64 << 20

// foreignFunctions are the foreign functions Envoy registers for every
// module that the host implements: compress and uncompress (zlib streams, as
// zlib's compress()/uncompress() produce and accept). A failure is
// SERIALIZATION_FAILURE, an unknown name NOT_FOUND.
var foreignFunctions = map[string]func(args []byte) ([]byte, status){
	"compress": func(args []byte) ([]byte, status) {
		var b bytes.Buffer
		w := zlib.NewWriter(&b)
		if _, err := w.Write(args); err != nil {
			return nil, statusSerializationFailed
		}
		if err := w.Close(); err != nil {
			return nil, statusSerializationFailed
		}
		return b.Bytes(), statusOK
	},
	"uncompress": func(args []byte) ([]byte, status) {
		r, err := zlib.NewReader(bytes.NewReader(args))
		if err != nil {
			return nil, statusSerializationFailed
		}
		out, err := io.ReadAll(io.LimitReader(r, maxUncompressed+1))
		if err != nil || len(out) > maxUncompressed {
			return nil, statusSerializationFailed
		}
		return out, statusOK
	},
}

// callForeign runs a foreign function by name.
func callForeign(name string, args []byte) ([]byte, status) {
	f, ok := foreignFunctions[name]
	if !ok {
		return nil, statusNotFound
	}
	return f(args)
}
