// Package retry paces the attempts to reach a dependency that went away:
// orders' outbox relay and fulfillment's consumer both reconnect to the
// broker at this pace.
package retry

import (
	"context"
	"time"
)

// Backoff paces the attempts to reach the broker after it went away: 250 ms,
// then twice as long each time, at most 5 s; Reset starts over once it works.
// The zero value is ready to use.
type Backoff struct{ next time.Duration }

const (
	backoffMin = 250 * time.Millisecond
	backoffMax = 5 * time.Second
)

// Next returns the pause to take now and doubles the one after.
func (b *Backoff) Next() time.Duration {
	pause := max(b.next, backoffMin)
	b.next = min(pause*2, backoffMax)
	return pause
}

// Reset makes the next pause the shortest again.
func (b *Backoff) Reset() { b.next = 0 }

// Sleep waits for d, or until ctx ends.
func Sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
