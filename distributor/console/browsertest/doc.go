// Package browsertest drives the distributor's web console in a real
// browser: Debian's headless Chromium through the DevTools protocol
// (chromedp), against a real distributor on loopback holding real signed
// bundles, real bundle polls and real decision records. It is a nested
// module so chromedp never becomes a dependency of meshguard itself.
// `make test` installs Chromium first (make browser).
package browsertest
