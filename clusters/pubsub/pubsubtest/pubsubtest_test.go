package pubsubtest

import (
	"net"
	"strings"
	"testing"
	"time"
)

func TestStartAndRestart(t *testing.T) {
	tests := []struct {
		name  string
		start func(testing.TB) (string, func(), func())
	}{
		{"redis", StartRedis},
		{"nats", StartNATS},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr, restart, stop := tc.start(t)
			addr = strings.TrimPrefix(addr, "nats://")
			dial := func() error {
				c, err := net.DialTimeout("tcp", addr, time.Second)
				if err == nil {
					c.Close()
				}
				return err
			}
			if err := dial(); err != nil {
				t.Fatalf("not reachable after start: %v", err)
			}
			restart()
			if err := dial(); err != nil {
				t.Fatalf("not reachable after restart: %v", err)
			}
			stop()
			if err := dial(); err == nil {
				t.Fatal("still reachable after stop")
			}
			stop() // idempotent
		})
	}
}
