package filters

import "testing"

// TestSetCaller: the caller's id and namespace are the exchange's own
// copies (the source may change under them), empty ones stay nil, and a
// reused exchange copies without allocating.
func TestSetCaller(t *testing.T) {
	ex := AcquireExchange(false)
	hdr := []byte("checkoutprod")
	ex.SetCaller(hdr[:8], hdr[8:])
	copy(hdr, "xxxxxxxxxxxx")
	if string(ex.CallerAppID) != "checkout" || string(ex.CallerNamespace) != "prod" {
		t.Fatalf("caller %q namespace %q", ex.CallerAppID, ex.CallerNamespace)
	}
	// The id cannot be appended to over the namespace.
	_ = append(ex.CallerAppID, "-extra"...)
	if string(ex.CallerNamespace) != "prod" {
		t.Fatalf("namespace %q after an append to the id", ex.CallerNamespace)
	}
	ex.SetCaller([]byte("orders"), nil)
	if string(ex.CallerAppID) != "orders" || ex.CallerNamespace != nil {
		t.Fatalf("caller %q namespace %q", ex.CallerAppID, ex.CallerNamespace)
	}
	ex.SetCaller(nil, nil)
	if ex.CallerAppID != nil || ex.CallerNamespace != nil {
		t.Fatalf("caller %q namespace %q", ex.CallerAppID, ex.CallerNamespace)
	}
	// reset (what ReleaseExchange does) keeps the buffer.
	ex.SetCaller([]byte("checkout"), []byte("prod"))
	ex.reset()
	if ex.CallerAppID != nil || cap(ex.callBuf) < len("checkoutprod") {
		t.Fatalf("after reset: caller %q, buffer of %d bytes", ex.CallerAppID, cap(ex.callBuf))
	}
	id, ns := []byte("checkout"), []byte("prod")
	if n := testing.AllocsPerRun(100, func() { ex.SetCaller(id, ns) }); n != 0 {
		t.Fatalf("SetCaller after a reset: %v allocs", n)
	}
	ReleaseExchange(ex)
}
