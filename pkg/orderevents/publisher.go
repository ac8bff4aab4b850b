package orderevents

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Why a publish failed.
var (
	// ErrNotRouted: the broker took the message but no queue was bound to
	// receive it; the mandatory flag made it come back.
	ErrNotRouted = errors.New("message not routed to any queue")
	// ErrNotConfirmed: the broker refused the message, or the channel closed
	// before it confirmed it.
	ErrNotConfirmed = errors.New("message not confirmed by the broker")
	// ErrBrokerBlocked: RabbitMQ has stopped accepting messages (a memory or
	// disk alarm); a publish now would wait for as long as the alarm lasts.
	ErrBrokerBlocked = errors.New("broker is blocking publishers")
)

// ConfirmTimeout bounds the wait for a publisher confirm.
const ConfirmTimeout = 5 * time.Second

// Publisher publishes on one AMQP channel in confirm mode, with the mandatory
// flag, and reports a message as published only once the broker has routed it
// to a queue and confirmed it. It is safe for concurrent use.
type Publisher struct {
	ch      *amqp.Channel
	blocked atomic.Bool

	publishMu sync.Mutex // a delivery tag and its publish must not interleave

	mu      sync.Mutex
	byTag   map[uint64]*inFlight
	byID    map[string]*inFlight
	closed  bool
	stopped chan struct{}
}

type inFlight struct {
	messageID string
	returned  bool
	done      chan error
}

// NewPublisher opens a channel on conn, puts it in confirm mode and starts
// matching the broker's returns and confirms to the messages waiting for them.
func NewPublisher(conn *amqp.Connection) (*Publisher, error) {
	ch, err := conn.Channel()
	if err == nil {
		err = ch.Confirm(false)
	}
	if err != nil {
		return nil, fmt.Errorf("publisher channel: %w", err)
	}
	p := &Publisher{ch: ch, byTag: map[uint64]*inFlight{}, byID: map[string]*inFlight{}, stopped: make(chan struct{})}
	// Returns must be unbuffered: RabbitMQ sends basic.return before the
	// basic.ack of the same message, and an unbuffered channel makes the
	// client hand settle the return before it can hand it the ack.
	returns := ch.NotifyReturn(make(chan amqp.Return))
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 64))
	go p.settle(returns, confirms)
	go func() {
		for b := range conn.NotifyBlocked(make(chan amqp.Blocking, 1)) {
			p.blocked.Store(b.Active)
		}
	}()
	return p, nil
}

// settle matches returns and confirms to the messages waiting for them.
func (p *Publisher) settle(returns <-chan amqp.Return, confirms <-chan amqp.Confirmation) {
	defer close(p.stopped)
	for {
		select {
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			p.mu.Lock()
			if f := p.byID[r.MessageId]; f != nil {
				f.returned = true
			}
			p.mu.Unlock()
		case c, ok := <-confirms:
			if !ok {
				p.failAll()
				return
			}
			p.mu.Lock()
			f := p.byTag[c.DeliveryTag]
			delete(p.byTag, c.DeliveryTag)
			if f != nil {
				delete(p.byID, f.messageID)
			}
			p.mu.Unlock()
			switch {
			case f == nil: // its publisher gave up waiting
			case !c.Ack:
				f.done <- ErrNotConfirmed
			case f.returned:
				f.done <- ErrNotRouted
			default:
				f.done <- nil
			}
		}
	}
}

func (p *Publisher) failAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for tag, f := range p.byTag {
		f.done <- ErrNotConfirmed
		delete(p.byTag, tag)
	}
	clear(p.byID)
}

// Publish publishes msg, which must have a MessageId, and waits up to
// ConfirmTimeout for the broker to route and confirm it.
func (p *Publisher) Publish(ctx context.Context, exchange, key string, msg amqp.Publishing) error {
	if msg.MessageId == "" {
		return errors.New("publish: message has no message_id")
	}
	if p.blocked.Load() {
		return ErrBrokerBlocked
	}
	f := &inFlight{messageID: msg.MessageId, done: make(chan error, 1)}

	p.publishMu.Lock()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.publishMu.Unlock()
		return ErrNotConfirmed
	}
	tag := p.ch.GetNextPublishSeqNo()
	p.byTag[tag], p.byID[msg.MessageId] = f, f
	p.mu.Unlock()
	err := p.ch.PublishWithContext(ctx, exchange, key, true, false, msg)
	p.publishMu.Unlock()
	if err != nil {
		p.forget(tag, msg.MessageId)
		return err
	}

	timer := time.NewTimer(ConfirmTimeout)
	defer timer.Stop()
	select {
	case err := <-f.done:
		return err
	case <-timer.C:
		p.forget(tag, msg.MessageId)
		return fmt.Errorf("%w within %s", ErrNotConfirmed, ConfirmTimeout)
	case <-ctx.Done():
		p.forget(tag, msg.MessageId)
		return ctx.Err()
	}
}

func (p *Publisher) forget(tag uint64, messageID string) {
	p.mu.Lock()
	delete(p.byTag, tag)
	delete(p.byID, messageID)
	p.mu.Unlock()
}

// Ready reports whether a publish can succeed now.
func (p *Publisher) Ready() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.closed && !p.blocked.Load()
}

// Done is closed when the channel has closed for good. The publisher does not
// reconnect.
func (p *Publisher) Done() <-chan struct{} { return p.stopped }

// Close closes the channel, failing what still waits.
func (p *Publisher) Close() error {
	err := p.ch.Close()
	<-p.stopped
	return err
}
