// Package codepages lets a process give back the mappings of the code pages
// it touched while starting.
//
// Most of an idle sidecar's resident memory is pages of its own executable:
// package initialisation touches code all over the binary, and the kernel
// maps the 64 KiB around every first touch. Once the sidecar is serving,
// most of that code never runs again. Release drops the process's mappings
// of its executable's code (MADV_DONTNEED on the read-only, executable
// mapping): the pages stay in the page cache, shared with every process
// running the same file, and whatever code runs again is mapped back on its
// first touch. Only code is released: it is never written, whatever the
// build mode, so nothing but the mapping is lost.
package codepages
