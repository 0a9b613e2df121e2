package api

import (
	"crypto/sha256"
	"encoding/hex"
)

// The controller is the only judge of the address-pool ConfigMap. When it
// accepts a config it publishes a copy of it, the accepted copy, in a
// second ConfigMap it owns next to the first (AcceptedConfigName). Speakers
// read only the accepted copy, so a config the controller refused (one that
// would take an address from a Service, say) never changes where or how an
// address is announced, and a restarted speaker finds the last accepted
// config even when the user's ConfigMap now holds a refused one.
//
// The copy holds the accepted YAML under ConfigKey and two annotations:
// the resourceVersion of the user's ConfigMap it was taken from, and the
// SHA-256 of the YAML. A speaker ignores a copy whose text does not match
// its hash (someone edited it by hand) and keeps the config it has; the
// controller writes the copy back as it should be.
const (
	// AnnotationAcceptedResourceVersion is the resourceVersion of the
	// user's ConfigMap whose config the copy holds.
	AnnotationAcceptedResourceVersion = "ironlb.io/accepted-resource-version"
	// AnnotationAcceptedSHA256 is the hex SHA-256 of the copy's ConfigKey.
	AnnotationAcceptedSHA256 = "ironlb.io/accepted-sha256"
	// LabelAcceptedCopy marks the accepted copy, for people listing
	// ConfigMaps: it is generated, and edits to it are undone.
	LabelAcceptedCopy = "ironlb.io/accepted-config"

	acceptedSuffix = "-accepted"
)

// AcceptedConfigName is the name of the accepted copy of the ConfigMap
// named configName, in the same namespace.
func AcceptedConfigName(configName string) string { return configName + acceptedSuffix }

// ConfigHash is the value of AnnotationAcceptedSHA256 for a config text.
func ConfigHash(text string) string {
	sum := sha256.Sum256([]byte(text))
	return hex.EncodeToString(sum[:])
}
