//go:build !linux

package codepages

// Release does nothing where it is not built.
func Release() (int, error) { return 0, nil }
