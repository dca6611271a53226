package redis

import (
	"context"
	"sync"

	goredis "github.com/redis/go-redis/v9"
)

// Publishes are batched: concurrent Publish calls queue their XADD, and a
// few pipeline goroutines send whatever is queued as one pipeline (one round
// trip, one write and one read syscall for the lot) and hand each caller its
// own reply. A lone publish goes out at once; under load, batches form by
// themselves. Every caller still returns only after Redis answered its XADD.

const (
	pipelines = 4   // batches in flight at once
	maxBatch  = 128 // XADDs in one pipeline at most
)

type pubReq struct {
	args goredis.XAddArgs
	id   string
	err  error
	done chan struct{}
}

var pubReqPool = sync.Pool{New: func() any { return &pubReq{done: make(chan struct{}, 1)} }}

type batcher struct {
	client *goredis.Client
	queue  chan *pubReq
	quit   chan struct{}
	wg     sync.WaitGroup
}

func newBatcher(client *goredis.Client) *batcher {
	bt := &batcher{client: client, queue: make(chan *pubReq, pipelines*maxBatch), quit: make(chan struct{})}
	bt.wg.Add(pipelines)
	for range pipelines {
		go bt.run()
	}
	return bt
}

// do queues one XADD and waits for its reply (or ctx).
func (bt *batcher) do(ctx context.Context, args goredis.XAddArgs) (string, error) {
	r := pubReqPool.Get().(*pubReq)
	r.args, r.id, r.err = args, "", nil
	select {
	case bt.queue <- r:
	case <-ctx.Done():
		pubReqPool.Put(r)
		return "", ctx.Err()
	case <-bt.quit:
		pubReqPool.Put(r)
		return "", ErrClosed
	}
	select {
	case <-r.done:
		id, err := r.id, r.err
		r.args = goredis.XAddArgs{}
		pubReqPool.Put(r)
		return id, err
	case <-bt.quit:
		// Closing: a batch in flight may still answer; after it, nothing will.
		bt.wg.Wait()
		select {
		case <-r.done:
			return r.id, r.err
		default:
			return "", ErrClosed
		}
	case <-ctx.Done():
		// The XADD may still be applied: the caller reports a failure for a
		// message that may have been stored (at least once, never "accepted"
		// for a message Redis did not take). r is not reused.
		return "", ctx.Err()
	}
}

func (bt *batcher) run() {
	defer bt.wg.Done()
	batch := make([]*pubReq, 0, maxBatch)
	cmds := make([]*goredis.StringCmd, 0, maxBatch)
	for {
		batch = batch[:0]
		select {
		case r := <-bt.queue:
			batch = append(batch, r)
		case <-bt.quit:
			return
		}
	fill:
		for len(batch) < maxBatch {
			select {
			case r := <-bt.queue:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		if len(batch) == 1 {
			r := batch[0]
			r.id, r.err = bt.client.XAdd(context.Background(), &r.args).Result()
			r.done <- struct{}{}
			continue
		}
		cmds = cmds[:0]
		pipe := bt.client.Pipeline()
		for _, r := range batch {
			cmds = append(cmds, pipe.XAdd(context.Background(), &r.args))
		}
		_, _ = pipe.Exec(context.Background()) // per-command errors are in cmds
		for i, r := range batch {
			r.id, r.err = cmds[i].Result()
			r.done <- struct{}{}
		}
	}
}

// close stops the pipeline goroutines after the batches in flight.
func (bt *batcher) close() {
	close(bt.quit)
	bt.wg.Wait()
	// Fail what is still queued: those callers are waiting.
	for {
		select {
		case r := <-bt.queue:
			r.err = ErrClosed
			r.done <- struct{}{}
		default:
			return
		}
	}
}
