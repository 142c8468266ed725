package decisionlog_test

import (
	"testing"

	"github.com/meshguard/meshguard/distributor/decisionlog/searchtest"
)

// The file log's Index passes the Searcher conformance suite.
func TestIndexConformance(t *testing.T) { searchtest.Run(t, searchtest.FileIndex) }
