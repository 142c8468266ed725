package verify

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// tarReader reads the tar subset bundles are written in: POSIX ustar
// headers (archive/tar's USTAR and PAX formats), regular files, and PAX
// extended headers that set only the next entry's path. archive/tar is not
// used because its io.Seeker fast path keeps os.File's Seek, and with it
// the fd_filestat_get import Envoy before April 2026 lacks, alive in any
// module that links fmt. Anything outside the subset is an error, never
// skipped: a verifier must not read a different archive than the writer.
type tarReader struct {
	r   io.Reader
	blk [blockSize]byte
	// left is the unread size of the current entry, pad its block padding.
	left, pad int64
}

const blockSize = 512

// maxPAXBytes bounds an extended header; bundle paths are at most 512 bytes.
const maxPAXBytes = 4096

// tarHeader is one entry's header.
type tarHeader struct {
	Name     string
	Typeflag byte
	Size     int64
}

// errTarEnd is returned by next at the end-of-archive marker.
var errTarEnd = io.EOF

// next skips the rest of the current entry and returns the next header.
func (t *tarReader) next() (*tarHeader, error) {
	if err := t.skip(); err != nil {
		return nil, err
	}
	var paxPath string
	havePAX := false
	for {
		if _, err := io.ReadFull(t.r, t.blk[:]); err != nil {
			return nil, fmt.Errorf("reading header: %w", unexpected(err))
		}
		if t.blk == [blockSize]byte{} {
			if havePAX {
				return nil, errors.New("extended header without an entry")
			}
			return nil, t.end()
		}
		h, err := t.parseHeader()
		if err != nil {
			return nil, err
		}
		if h.Typeflag != 'x' {
			if havePAX {
				h.Name = paxPath
			}
			t.left, t.pad = h.Size, -h.Size&(blockSize-1)
			return h, nil
		}
		if havePAX {
			return nil, errors.New("two extended headers in a row")
		}
		if h.Size > maxPAXBytes {
			return nil, fmt.Errorf("extended header of %d bytes", h.Size)
		}
		rec := make([]byte, h.Size+(-h.Size&(blockSize-1)))
		if _, err := io.ReadFull(t.r, rec); err != nil {
			return nil, fmt.Errorf("reading extended header: %w", unexpected(err))
		}
		if paxPath, err = parsePAX(rec[:h.Size]); err != nil {
			return nil, err
		}
		havePAX = true
	}
}

// read fills b with the current entry's contents (len(b) must not exceed
// what is left of it).
func (t *tarReader) read(b []byte) error {
	if int64(len(b)) > t.left {
		return errors.New("read past the entry")
	}
	if _, err := io.ReadFull(t.r, b); err != nil {
		return unexpected(err)
	}
	t.left -= int64(len(b))
	return nil
}

func (t *tarReader) skip() error {
	n := t.left + t.pad
	t.left, t.pad = 0, 0
	if n == 0 {
		return nil
	}
	if _, err := io.CopyN(io.Discard, t.r, n); err != nil {
		return unexpected(err)
	}
	return nil
}

// end checks the end-of-archive marker: a second zero block, then only
// zero padding.
func (t *tarReader) end() error {
	if _, err := io.ReadFull(t.r, t.blk[:]); err != nil || t.blk != [blockSize]byte{} {
		return errors.New("end-of-archive marker is not two zero blocks")
	}
	for {
		n, err := t.r.Read(t.blk[:])
		if bytes.IndexFunc(t.blk[:n], func(r rune) bool { return r != 0 }) >= 0 {
			return errors.New("data after the end-of-archive marker")
		}
		if err == io.EOF {
			return errTarEnd
		}
		if err != nil {
			return err
		}
	}
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// parseHeader decodes t.blk: checksum, ustar magic and version, name
// (prefix/name), size and type.
func (t *tarReader) parseHeader() (*tarHeader, error) {
	b := t.blk[:]
	want, err := octal(b[148:156])
	if err != nil {
		return nil, fmt.Errorf("header checksum: %v", err)
	}
	var sum int64
	for i, c := range b {
		if i >= 148 && i < 156 {
			c = ' '
		}
		sum += int64(c)
	}
	if sum != want {
		return nil, errors.New("header checksum mismatch")
	}
	if string(b[257:263]) != "ustar\x00" || string(b[263:265]) != "00" {
		return nil, errors.New("not a POSIX ustar header")
	}
	size, err := octal(b[124:136])
	if err != nil {
		return nil, fmt.Errorf("entry size: %v", err)
	}
	h := &tarHeader{Name: cstr(b[0:100]), Typeflag: b[156], Size: size}
	if h.Typeflag == 0 {
		h.Typeflag = '0'
	}
	if p := cstr(b[345:500]); p != "" {
		h.Name = p + "/" + h.Name
	}
	return h, nil
}

// cstr is a NUL-terminated header field.
func cstr(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// octal parses a numeric header field: octal digits, optionally padded with
// leading spaces or zeros and ended by NUL or space. The base-256 form is
// refused (no bundle entry needs 8 GiB).
func octal(b []byte) (int64, error) {
	s := string(bytes.Trim(b, " \x00"))
	if s == "" {
		return 0, errors.New("empty number")
	}
	v, err := strconv.ParseInt(s, 8, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("bad octal number %q", s)
	}
	return v, nil
}

// parsePAX reads "<len> path=<value>\n" records; path is the only key
// accepted, and exactly once.
func parsePAX(b []byte) (string, error) {
	var path string
	seen := false
	for len(b) > 0 {
		sp := bytes.IndexByte(b, ' ')
		if sp <= 0 {
			return "", errors.New("malformed extended header record")
		}
		n, err := strconv.Atoi(string(b[:sp]))
		if err != nil || n <= sp+1 || n > len(b) || b[n-1] != '\n' {
			return "", errors.New("malformed extended header record length")
		}
		kv := b[sp+1 : n-1]
		b = b[n:]
		k, v, ok := bytes.Cut(kv, []byte("="))
		if !ok || string(k) != "path" {
			return "", fmt.Errorf("extended header key %q is not allowed (only path)", k)
		}
		if seen {
			return "", errors.New("extended header sets path twice")
		}
		path, seen = string(v), true
	}
	if !seen || path == "" {
		return "", errors.New("extended header without a path")
	}
	return path, nil
}
