package limit

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
)

func TestNilGateAdmitsEverything(t *testing.T) {
	g := New(0)
	if g != nil {
		t.Fatal("New(0) is a limit")
	}
	for range 3 {
		if _, err := g.Acquire(context.Background(), time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	g.Release()
}

func TestAcquire(t *testing.T) {
	g := New(1)
	if w, err := g.Acquire(context.Background(), 0); err != nil || w != 0 {
		t.Fatalf("free slot: waited %v, %v", w, err)
	}

	t.Run("timeout", func(t *testing.T) {
		w, err := g.Acquire(context.Background(), 20*time.Millisecond)
		if !errors.Is(err, ErrTimeout) || Code(err) != codes.DeadlineExceeded {
			t.Fatalf("err %v (code %v), want ErrTimeout/DeadlineExceeded", err, Code(err))
		}
		if w < 20*time.Millisecond {
			t.Errorf("gave up after %v, before the timeout", w)
		}
	})
	t.Run("context deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		_, err := g.Acquire(ctx, 0)
		if !errors.Is(err, context.DeadlineExceeded) || Code(err) != codes.DeadlineExceeded {
			t.Fatalf("err %v (code %v)", err, Code(err))
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := g.Acquire(ctx, time.Hour)
		if !errors.Is(err, context.Canceled) || Code(err) != codes.Canceled {
			t.Fatalf("err %v (code %v)", err, Code(err))
		}
	})
	t.Run("a released slot admits a waiter", func(t *testing.T) {
		got := make(chan error, 1)
		go func() {
			_, err := g.Acquire(context.Background(), 10*time.Second)
			got <- err
		}()
		select {
		case err := <-got:
			t.Fatalf("admitted while the slot was taken: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		g.Release()
		select {
		case err := <-got:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the waiter was never admitted")
		}
	})
}

func BenchmarkAcquireRelease(b *testing.B) {
	g := New(64)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := g.Acquire(ctx, time.Second); err != nil {
			b.Fatal(err)
		}
		g.Release()
	}
}
