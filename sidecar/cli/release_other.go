//go:build !linux

package cli

// releaseStartupPages is Linux's only (MADV_PAGEOUT).
func releaseStartupPages() {}
