// Package output prints a command's result in the format its user asked for
// with -o: json (indented), yaml (the same fields), table (the human form)
// or csv (a header row, then one row a record), so every verb that prints
// data speaks the same four formats.
package output

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"unicode/utf8"

	"sigs.k8s.io/yaml"
)

// Format is an output format.
type Format string

// The formats.
const (
	JSON  Format = "json"
	YAML  Format = "yaml"
	Table Format = "table"
	CSV   Format = "csv"
)

// All is every format, the table (human) form first.
var All = []Format{Table, JSON, YAML, CSV}

// Names lists formats as strings (for flags and messages).
func Names(fs []Format) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = string(f)
	}
	return out
}

// Rows is data with a table form: column names and one row of cells each.
// The table format aligns them; csv writes them as they are.
type Rows interface {
	Rows() (columns []string, rows [][]string)
}

// Texter is data with its own human form, which the table format prints
// instead of aligned rows (a report, a summary line).
type Texter interface {
	Text(w io.Writer) error
}

// ErrNoTable: the value has no table or csv form.
var ErrNoTable = errors.New("no table form")

// Write prints v to w in format f. json and yaml marshal v (json field
// names in both); table prints v's Text, else its Rows aligned; csv prints
// its Rows.
func Write(w io.Writer, f Format, v any) error {
	switch f {
	case JSON:
		return writeJSON(w, v)
	case YAML:
		j, err := json.Marshal(v)
		if err != nil {
			return err
		}
		y, err := yaml.JSONToYAML(j)
		if err != nil {
			return err
		}
		_, err = w.Write(y)
		return err
	case Table:
		if t, ok := v.(Texter); ok {
			return t.Text(w)
		}
		return writeRows(v, f, func(cols []string) rowWriter { return NewTableWriter(w, cols) })
	case CSV:
		return writeRows(v, f, func(cols []string) rowWriter { return NewCSVWriter(w, cols) })
	}
	return fmt.Errorf("unknown output format %q", f)
}

// rowWriter is TableWriter or CSVWriter.
type rowWriter interface {
	Row(cells ...string)
	Flush() error
}

// writeRows prints v's Rows with the writer newWriter makes.
func writeRows(v any, f Format, newWriter func(columns []string) rowWriter) error {
	r, ok := v.(Rows)
	if !ok {
		return fmt.Errorf("-o %s: %w", f, ErrNoTable)
	}
	cols, rows := r.Rows()
	rw := newWriter(cols)
	for _, row := range rows {
		rw.Row(row...)
	}
	return rw.Flush()
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// TableWriter aligns rows under upper-case column names, kubectl style.
// Cells go through Clean, so a hostile value (a request path in an audit
// record, an export name in a module) can neither break the grid nor send
// escape sequences to the reader's terminal.
type TableWriter struct {
	tw *tabwriter.Writer
}

// NewTableWriter writes the header line at once.
func NewTableWriter(w io.Writer, columns []string) *TableWriter {
	t := &TableWriter{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	up := make([]string, len(columns))
	for i, c := range columns {
		up[i] = strings.ToUpper(c)
	}
	t.Row(up...)
	return t
}

// Row adds one row.
func (t *TableWriter) Row(cells ...string) {
	var b bytes.Buffer
	for i, c := range cells {
		if i > 0 {
			b.WriteByte('\t')
		}
		if c == "" {
			c = "-"
		}
		b.WriteString(Clean(c))
	}
	b.WriteByte('\n')
	_, _ = t.tw.Write(b.Bytes())
}

// Flush writes what is buffered (column widths are those of the rows since
// the last flush).
func (t *TableWriter) Flush() error { return t.tw.Flush() }

// Clean makes s safe to print on a terminal: control characters (C0, DEL,
// C1) and the Unicode bidirectional overrides, which can make text read as
// something else, print as \x.. or \u.... escapes; everything else is kept.
func Clean(s string) string {
	if !strings.ContainsFunc(s, unsafeRune) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r < 0x80 && unsafeRune(r):
			fmt.Fprintf(&b, "\\x%02x", r)
		case unsafeRune(r):
			fmt.Fprintf(&b, "\\u%04x", r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func unsafeRune(r rune) bool {
	return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == utf8.RuneError ||
		(r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) || r == 0x200e || r == 0x200f || r == 0x061c
}

// CSVWriter writes a header row and then records (RFC 4180). A cell that a
// spreadsheet would run as a formula (starting with =, +, -, @, tab or CR)
// is written with a leading apostrophe, as OWASP advises for CSV that
// carries untrusted values: audit records hold request paths and subjects
// callers chose.
type CSVWriter struct {
	cw *csv.Writer
}

// NewCSVWriter writes the header row at once.
func NewCSVWriter(w io.Writer, columns []string) *CSVWriter {
	c := &CSVWriter{cw: csv.NewWriter(w)}
	_ = c.cw.Write(columns)
	return c
}

// Row adds one record.
func (c *CSVWriter) Row(cells ...string) {
	out := make([]string, len(cells))
	for i, v := range cells {
		if v != "" && strings.ContainsRune("=+-@\t\r", rune(v[0])) {
			v = "'" + v
		}
		out[i] = v
	}
	_ = c.cw.Write(out)
}

// Flush writes what is buffered and reports the first write error.
func (c *CSVWriter) Flush() error {
	c.cw.Flush()
	return c.cw.Error()
}

// Stream prints records one at a time, for results too long to hold: json
// as one compact object a line (NDJSON), yaml as "---"-separated
// documents, table rows aligned up to each Flush, csv rows.
type Stream struct {
	w    io.Writer
	f    Format
	n    int
	rows rowWriter // table and csv
}

// NewStream starts a stream; table and csv print the columns first.
func NewStream(w io.Writer, f Format, columns []string) *Stream {
	s := &Stream{w: w, f: f}
	switch f {
	case Table:
		s.rows = NewTableWriter(w, columns)
	case CSV:
		s.rows = NewCSVWriter(w, columns)
	}
	return s
}

// Record prints one record, given as its JSON and its table cells.
func (s *Stream) Record(raw []byte, row []string) error {
	defer func() { s.n++ }()
	switch s.f {
	case JSON:
		var b bytes.Buffer
		if err := json.Compact(&b, raw); err != nil {
			return err
		}
		b.WriteByte('\n')
		_, err := s.w.Write(b.Bytes())
		return err
	case YAML:
		y, err := yaml.JSONToYAML(raw)
		if err != nil {
			return err
		}
		if s.n > 0 {
			if _, err := io.WriteString(s.w, "---\n"); err != nil {
				return err
			}
		}
		_, err = s.w.Write(y)
		return err
	case Table, CSV:
		s.rows.Row(row...)
	default:
		return fmt.Errorf("unknown output format %q", s.f)
	}
	return nil
}

// Flush writes what table and csv buffer.
func (s *Stream) Flush() error {
	if s.rows != nil {
		return s.rows.Flush()
	}
	return nil
}
