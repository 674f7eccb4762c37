package store

import (
	"context"
	"sync"
)

// Queue carries write operations from callers to an engine's single
// committer goroutine, which takes them in batches (group commit: one
// durable commit for many operations). Its contract:
//
//  1. Submit queues an operation, or returns ErrUnavailable once Close has
//     begun (or ctx's error when ctx ends first). A queued operation is
//     always answered, by the committer or by Next's fail.
//  2. Next blocks for an operation, then takes those already waiting, up
//     to max in all. Once Close was called it fails what is still queued
//     and returns nil: the committer stops.
//  3. Close may be called more than once.
type Queue[O any] struct {
	ch   chan O
	stop chan struct{}
	once sync.Once
	// mu orders Submit against Close: once closed is set nothing more
	// enters, so every queued operation gets an answer.
	mu     sync.RWMutex
	closed bool
}

// NewQueue returns a queue holding up to size waiting operations.
func NewQueue[O any](size int) *Queue[O] {
	return &Queue[O]{ch: make(chan O, size), stop: make(chan struct{})}
}

// Submit queues o (see the Queue contract).
func (q *Queue[O]) Submit(ctx context.Context, o O) error {
	q.mu.RLock()
	defer q.mu.RUnlock()
	if q.closed {
		return ErrUnavailable
	}
	select {
	case q.ch <- o:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Next returns the next batch, or nil after Close (failing what was still
// queued with fail).
func (q *Queue[O]) Next(max int, fail func(O)) []O {
	select {
	case first := <-q.ch:
		batch := []O{first}
		for len(batch) < max {
			select {
			case o := <-q.ch:
				batch = append(batch, o)
			default:
				return batch
			}
		}
		return batch
	case <-q.stop:
		for {
			select {
			case o := <-q.ch:
				fail(o)
			default:
				return nil
			}
		}
	}
}

// Close stops taking operations and tells the committer to stop.
func (q *Queue[O]) Close() {
	q.once.Do(func() {
		q.mu.Lock()
		q.closed = true
		q.mu.Unlock()
		close(q.stop)
	})
}

// Closed reports whether Close was called.
func (q *Queue[O]) Closed() bool {
	q.mu.RLock()
	defer q.mu.RUnlock()
	return q.closed
}

// Len is the number of operations waiting.
func (q *Queue[O]) Len() int { return len(q.ch) }
