package listeners

import (
	"errors"
	"fmt"
	"net"

	"go.uber.org/zap"

	"github.com/switchyard-proxy/switchyard/internal/rawio"
)

// Listen binds every address. Like daprd, an address that cannot be bound
// is skipped with a warning as long as another one works; if none can be
// bound the error lists them all.
func Listen(log *zap.Logger, name string, addrs []string) ([]net.Listener, error) {
	if len(addrs) == 0 {
		return nil, fmt.Errorf("listener %s: no addresses", name)
	}
	var out []net.Listener
	var errs []error
	for _, a := range addrs {
		l, err := net.Listen("tcp", a)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, rawio.Listener(l))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("listener %s: could not bind any address: %w", name, errors.Join(errs...))
	}
	for _, err := range errs {
		log.Warn("failed to listen on an address; serving on the others", zap.String("listener", name), zap.Error(err))
	}
	return out, nil
}

// AddrsOf returns the bound addresses of ls.
func AddrsOf(ls []net.Listener) []net.Addr {
	out := make([]net.Addr, len(ls))
	for i, l := range ls {
		out[i] = l.Addr()
	}
	return out
}
