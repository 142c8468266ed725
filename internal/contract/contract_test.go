package contract

import (
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestRecordFieldsAreTheConstants: Record's JSON names are exactly the
// Field constants, and RecordStringFields are its string fields (but the
// required decision, which has its own value check).
func TestRecordFieldsAreTheConstants(t *testing.T) {
	consts := []string{FieldTime, FieldDecisionID, FieldDecision, FieldRuleIDs, FieldReason, FieldBundleRevision,
		FieldSubject, FieldDeviceID, FieldDeviceClass, FieldVersion, FieldMethod, FieldPath, FieldAuthority, FieldProxy, FieldSource,
		FieldPeer, FieldTokenSubject, FieldForwarder, FieldJTI, FieldTargetDevice}
	var tags, strs []string
	rt := reflect.TypeFor[Record]()
	for i := range rt.NumField() {
		f := rt.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		tags = append(tags, name)
		if f.Type.Kind() == reflect.String && name != FieldDecision {
			strs = append(strs, name)
		}
	}
	assert.Equal(t, consts, tags)
	assert.ElementsMatch(t, strs, RecordStringFields)
	assert.NotContains(t, RecordDecisions, DecisionUnavailable, "an unavailable policy is answered, never recorded")
	var reply []string
	for f := range reflect.TypeFor[Reply]().Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		reply = append(reply, name)
	}
	assert.Equal(t, []string{FieldDecision, FieldDecisionID, FieldRule, FieldError, FieldReason}, reply)
	assert.Equal(t, "/v1/bundles/grid", ChannelPath("grid"))
}
