package contract

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// TestRecordFieldsAreTheConstants: Record's JSON names are exactly the
// Field constants, and RecordStringFields are its string fields (but the
// required decision, which has its own value check).
func TestRecordFieldsAreTheConstants(t *testing.T) {
	consts := []string{FieldTime, FieldDecisionID, FieldDecision, FieldRuleIDs, FieldReason, FieldBundleRevision,
		FieldSubject, FieldDeviceID, FieldDeviceClass, FieldVersion, FieldMethod, FieldPath, FieldAuthority, FieldProxy, FieldSource,
		FieldPeer, FieldTokenSubject, FieldForwarder, FieldJTI, FieldTargetDevice, FieldFirmware, FieldProxyID,
		FieldUser, FieldUserIssuer, FieldCount, FieldDropped, FieldFirstTime, FieldLastTime}
	var tags, strs, counts, times []string
	rt := reflect.TypeFor[Record]()
	for i := range rt.NumField() {
		f := rt.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		tags = append(tags, name)
		switch {
		case f.Type.Kind() == reflect.String && name != FieldDecision:
			strs = append(strs, name)
		case f.Type.Kind() == reflect.Uint64 && name != FieldBundleRevision:
			counts = append(counts, name)
		case f.Type == reflect.TypeFor[time.Time]() && name != FieldTime:
			times = append(times, name)
		}
	}
	assert.Equal(t, consts, tags)
	assert.ElementsMatch(t, strs, RecordStringFields)
	assert.Equal(t, counts, RecordCountFields)
	assert.Equal(t, times, RecordTimeFields)
	assert.Contains(t, RecordDecisions, DecisionUnavailable, "unavailable refusals are recorded (aggregated)")
	assert.Contains(t, RecordDecisions, DecisionGap)
	var reply []string
	for f := range reflect.TypeFor[Reply]().Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		reply = append(reply, name)
	}
	assert.Equal(t, []string{FieldDecision, FieldDecisionID, FieldRule, FieldError, FieldReason}, reply)
	assert.Equal(t, "/v1/bundles/grid", ChannelPath("grid"))
}
