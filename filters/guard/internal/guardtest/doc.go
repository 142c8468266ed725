// Package guardtest holds what the guard's tests share: signing keys, the
// grid policies, signed bundles packed as `meshguard policy bundle` packs
// them, guard configurations and JWT-SVID and device tokens, all made with
// real keys and real signatures. It is for tests only and builds natively
// (the policy front end it packs with is not built for wasip1).
package guardtest
