package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/enumflag"
	"github.com/meshguard/meshguard/internal/output"
)

// stdio is "-": stdin as an input, stdout as an output file.
const stdio = "-"

// inputs reads the files one command line names. "-" is stdin, which can
// be read once; a second "-" is a usage error rather than an empty file.
type inputs struct {
	stdin    io.Reader
	stdinFor string
}

func newInputs(cmd *cobra.Command) *inputs { return &inputs{stdin: cmd.InOrStdin()} }

// read returns the content of path (for what, e.g. "--input"); a file that
// cannot be read is a usage error.
func (in *inputs) read(what, path string) ([]byte, error) {
	if path != stdio {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, usagef("%s: %w", what, err)
		}
		return b, nil
	}
	if in.stdinFor != "" {
		return nil, usagef("%s -: stdin is already the input of %s", what, in.stdinFor)
	}
	in.stdinFor = what
	b, err := io.ReadAll(in.stdin)
	if err != nil {
		return nil, usagef("%s: reading stdin: %w", what, err)
	}
	return b, nil
}

// readOptional is read for a flag that may be unset ("").
func (in *inputs) readOptional(what, path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	return in.read(what, path)
}

// writeOutputFile writes data to path, or to stdout for "-". A file is
// replaced whole (written beside it, then renamed), so a failed write never
// leaves half a bundle or module where the last good one was.
func writeOutputFile(cmd *cobra.Command, path string, data []byte, mode os.FileMode) error {
	if path == stdio {
		_, err := cmd.OutOrStdout().Write(data)
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("--output-file: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename, there is nothing left to remove
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(mode)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("--output-file %s: %w", path, err)
	}
	return nil
}

// outputFormat is a verb's -o/--output flag.
type outputFormat struct{ name string }

// addOutputFlag registers -o/--output on cmd with the formats it prints
// (the first is the default). A value that is not a format (someone used to
// `-o FILE`) is refused with the flag that takes the file.
func addOutputFlag(cmd *cobra.Command, formats ...output.Format) *outputFormat {
	o := &outputFormat{}
	v := enumflag.Var(cmd.Flags(), &o.name, "output", "o", string(formats[0]), output.Names(formats), "output format")
	if cmd.Flags().Lookup("output-file") != nil {
		v.WithHint("-o is the output format; files go to --output-file")
	} else {
		v.WithHint("-o is the output format; redirect stdout for a file")
	}
	return o
}

// format is the chosen format.
func (o *outputFormat) format() output.Format { return output.Format(o.name) }

// print writes v to the command's stdout in the chosen format.
func (o *outputFormat) print(cmd *cobra.Command, v any) error {
	return o.printTo(cmd.OutOrStdout(), v)
}

// printTo writes v to w in the chosen format.
func (o *outputFormat) printTo(w io.Writer, v any) error {
	err := output.Write(w, o.format(), v)
	if errors.Is(err, output.ErrNoTable) {
		return usage(err)
	}
	return err
}

// summaryOut is where a verb's summary goes: stdout, unless its artifact
// went there (--output-file -), then stderr.
func summaryOut(cmd *cobra.Command, outputFile string) io.Writer {
	if outputFile == stdio {
		return cmd.ErrOrStderr()
	}
	return cmd.OutOrStdout()
}
