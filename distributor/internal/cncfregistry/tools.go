//go:build tools

// Keep the registry command in this module's requirements.
package cncfregistry

import _ "github.com/distribution/distribution/v3/cmd/registry"
