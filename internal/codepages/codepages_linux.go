package codepages

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// Release drops the process's mappings of its executable's code and returns
// how many bytes of address space it covered.
func Release() (int, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, err
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0, err
	}
	total := 0
	for _, line := range bytes.Split(maps, []byte{'\n'}) {
		start, end, ok := codeMapping(line, exe)
		if !ok {
			continue
		}
		if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, start, end-start, syscall.MADV_DONTNEED); errno != 0 {
			return total, fmt.Errorf("codepages: madvise %x-%x: %w", start, end, errno)
		}
		total += int(end - start)
	}
	return total, nil
}

// codeMapping parses a /proc/self/maps line and reports the address range
// when it is a read-only, executable, private mapping of exe.
func codeMapping(line []byte, exe string) (start, end uintptr, ok bool) {
	f := bytes.Fields(line)
	if len(f) < 6 || string(f[1]) != "r-xp" || string(bytes.Join(f[5:], []byte{' '})) != exe {
		return 0, 0, false
	}
	lo, hi, found := bytes.Cut(f[0], []byte{'-'})
	if !found {
		return 0, 0, false
	}
	s, err1 := strconv.ParseUint(string(lo), 16, 64)
	e, err2 := strconv.ParseUint(string(hi), 16, 64)
	if err1 != nil || err2 != nil || e <= s {
		return 0, 0, false
	}
	return uintptr(s), uintptr(e), true
}
