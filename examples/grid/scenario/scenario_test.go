package scenario

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/filters/wasmbuild"
	"github.com/meshguard/meshguard/policies"
)

// TestGridScenarioEndToEnd runs the whole demo (real distributor and dev
// proxy processes, real guard.wasm, mTLS callers) and asserts every decision,
// the rule and revision behind it in the audit trail, and the audit chain.
func TestGridScenarioEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds the CLI and guard.wasm and starts processes")
	}
	root, err := wasmbuild.ModuleRoot()
	require.NoError(t, err)
	bin := filepath.Join(t.TempDir(), "meshguard")
	build := exec.Command("go", "build", "-o", bin, "./cmd/meshguard")
	build.Dir = root
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)
	guard := wasmbuild.ForTest(t, "github.com/meshguard/meshguard/filters/guard")

	var log bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := Run(ctx, Options{Root: root, Bin: bin, GuardWasm: guard, Out: &log})
	require.NoError(t, err, "%s", log.String())
	var table bytes.Buffer
	rep.Table(&table)
	t.Log("\n" + table.String())
	require.NoError(t, rep.Check())

	all := AllSteps()
	require.Len(t, rep.Outcomes, len(all))
	wantRules := map[int]string{
		0: "meter-api/readers-read", 1: "meter-api/billing-raw-readings", 3: "inverters/controller-write",
		4: "approved-versions/controller-releases", 5: "approved-versions/controller-releases",
		6: "approved-versions/inverter-firmware", 7: "deregistered", 10: "inverters/controller-write", 11: "",
		12: "meter-api/billing-raw-readings", 13: "meter-api/readers-read",
	}
	for i, o := range rep.Outcomes {
		if want, ok := wantRules[i]; ok {
			assert.Equal(t, want, o.Rule, "step %d (%s)", i+1, o.Step.Note)
		}
		if o.Step.BeforeGuard {
			assert.Empty(t, o.ID, "step %d (%s): no decision", i+1, o.Step.Note)
			continue
		}
		wantRev := "1"
		if i >= len(Steps) { // StepsAfterChange and StepsOutbound
			wantRev = "2"
		}
		assert.Equal(t, wantRev, o.Revision, "step %d (%s) decided by the bundle revision", i+1, o.Step.Note)
		if o.Status >= 400 {
			assert.NotEmpty(t, o.ID, "step %d: a deny carries a decision id", i+1)
		}
	}
	assert.Equal(t, policies.ReasonTargetMismatch, rep.Outcomes[11].Reason, "a device token is bound to the device the path names")
	attack := rep.Outcomes[len(Steps)+len(StepsAfterChange)-5:]
	assert.Contains(t, attack[0].Reason, "two callers: the mTLS peer spiffe://grid.example/ns/billing/sa/billing presents a JWT-SVID of spiffe://grid.example/ns/der/sa/controller")
	assert.Contains(t, attack[1].Reason, "two callers")
	assert.Contains(t, attack[2].Reason, "audience mismatch")
	assert.Contains(t, attack[3].Reason, "ambiguous credentials")
	assert.Equal(t, policies.ErrPathEncodedSlash.Error(), attack[4].Reason)
	outs := rep.Outcomes[len(Steps)+len(StepsAfterChange):]
	assert.Equal(t, "der-upstreams/inverter-firmware", outs[1].Rule, "the caller's side refused by the upstream rule")
	assert.Equal(t, policies.ReasonVersionRange, outs[1].Reason)
	assert.True(t, rep.AuditOK, rep.AuditOutput)
	assert.Empty(t, rep.StatusProblem, "meshguard status shows the dev proxy polling the latest revision")
	assert.GreaterOrEqual(t, rep.Records, len(all), "every decision reached the audit trail (allows are logged too)")
	assert.True(t, strings.Contains(log.String(), "published bundle revision 2"))
}
