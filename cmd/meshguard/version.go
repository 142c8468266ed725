package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/buildinfo"
	"github.com/meshguard/meshguard/internal/output"
)

// versionResult is what meshguard version prints.
type versionResult struct{ buildinfo.Info }

// Text is the labelled form.
func (v versionResult) Text(w io.Writer) error {
	_, err := fmt.Fprintf(w, "meshguard %s\ncommit:  %s\nbuilt:   %s\ngo:      %s\n", v.Version, v.Commit, v.Date, v.GoVersion)
	return err
}

// Rows is one row.
func (v versionResult) Rows() ([]string, [][]string) {
	return []string{"version", "commit", "date", "goVersion"}, [][]string{{v.Version, v.Commit, v.Date, v.GoVersion}}
}

func newVersionCmd() *cobra.Command {
	var format *outputFormat
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit, build date and Go version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return format.print(cmd, versionResult{buildinfo.Get()})
		},
	}
	format = addOutputFlag(cmd, output.All...)
	return cmd
}
