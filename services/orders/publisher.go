package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/ordertrace/ordertrace/pkg/orderevents"
	"github.com/ordertrace/ordertrace/pkg/telemetry"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// ErrNotRouted means the broker accepted a message but no queue was bound to
// take it (the mandatory flag made it come back).
var ErrNotRouted = errors.New("message not routed to any queue")

// ErrNotConfirmed means the broker refused the message or the channel closed
// before confirming it.
var ErrNotConfirmed = errors.New("message not confirmed by the broker")

// confirmTimeout bounds the wait for a publisher confirm.
const confirmTimeout = 5 * time.Second

// Publisher publishes order events on one AMQP channel in confirm mode, with
// the mandatory flag, and reports each message as published only once the
// broker has routed and confirmed it.
type Publisher struct {
	conn   *amqp.Connection
	ch     *amqp.Channel
	tracer trace.Tracer
	tel    *telemetry.Telemetry
	peer   []attribute.KeyValue

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

func openPublisher(ctx context.Context, amqpURL string, tel *telemetry.Telemetry) (*Publisher, error) {
	conn, err := amqp.DialConfig(amqpURL, amqp.Config{Properties: amqp.Table{"connection_name": "orders-publisher"}})
	if err != nil {
		return nil, fmt.Errorf("connect to rabbitmq: %w", err)
	}
	ch, err := conn.Channel()
	if err == nil {
		err = orderevents.DeclareTopology(ch)
	}
	if err == nil {
		err = ch.Confirm(false)
	}
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("rabbitmq publisher channel: %w", err)
	}
	p := &Publisher{
		conn:    conn,
		ch:      ch,
		tracer:  tel.Tracer("github.com/ordertrace/ordertrace/services/orders"),
		tel:     tel,
		peer:    telemetry.AMQPPeerAttributes(amqpURL),
		byTag:   map[uint64]*inFlight{},
		byID:    map[string]*inFlight{},
		stopped: make(chan struct{}),
	}
	// Returns must be unbuffered: RabbitMQ sends basic.return before the
	// basic.ack of the same message, and an unbuffered channel makes the
	// client hand us the return before it can hand us the ack.
	returns := ch.NotifyReturn(make(chan amqp.Return))
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 64))
	go p.settle(returns, confirms)
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
			case f == nil:
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

// PublishOrderCreated publishes body as an order.created message inside a
// PRODUCER span, carrying the trace context and baggage in its headers, and
// waits for the broker's confirm.
func (p *Publisher) PublishOrderCreated(ctx context.Context, body []byte) (err error) {
	messageID := uuid.NewString()
	ctx, span := p.tracer.Start(ctx, "publish "+orderevents.Exchange,
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(p.peer...),
		trace.WithAttributes(
			semconv.MessagingSystemRabbitMQ,
			semconv.MessagingOperationTypeSend,
			semconv.MessagingOperationName("publish"),
			semconv.MessagingDestinationName(orderevents.Exchange),
			semconv.MessagingRabbitMQDestinationRoutingKey(orderevents.RoutingKeyCreated),
			semconv.MessagingMessageID(messageID),
			semconv.MessagingMessageBodySize(len(body)),
		))
	defer func() {
		recordError(span, err)
		span.End()
	}()

	msg := amqp.Publishing{
		Headers:      telemetry.InjectAMQP(ctx, p.tel.Propagator, nil),
		ContentType:  "application/json",
		DeliveryMode: amqp.Persistent,
		MessageId:    messageID,
		Timestamp:    time.Now().UTC(),
		Type:         orderevents.RoutingKeyCreated,
		AppId:        "orders",
		Body:         body,
	}
	f := &inFlight{messageID: messageID, done: make(chan error, 1)}

	p.publishMu.Lock()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.publishMu.Unlock()
		return fmt.Errorf("publish: %w", ErrNotConfirmed)
	}
	tag := p.ch.GetNextPublishSeqNo()
	p.byTag[tag], p.byID[messageID] = f, f
	p.mu.Unlock()
	err = p.ch.PublishWithContext(ctx, orderevents.Exchange, orderevents.RoutingKeyCreated, true, false, msg)
	p.publishMu.Unlock()
	if err != nil {
		p.forget(tag, messageID)
		return fmt.Errorf("publish: %w", err)
	}
	span.SetAttributes(semconv.MessagingRabbitMQMessageDeliveryTag(int(tag)))

	timer := time.NewTimer(confirmTimeout)
	defer timer.Stop()
	select {
	case err := <-f.done:
		if err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		return nil
	case <-timer.C:
		p.forget(tag, messageID)
		return fmt.Errorf("publish: %w after %s", ErrNotConfirmed, confirmTimeout)
	case <-ctx.Done():
		p.forget(tag, messageID)
		return fmt.Errorf("publish: %w", ctx.Err())
	}
}

func (p *Publisher) forget(tag uint64, messageID string) {
	p.mu.Lock()
	delete(p.byTag, tag)
	delete(p.byID, messageID)
	p.mu.Unlock()
}

// Ready reports whether the publisher can publish.
func (p *Publisher) Ready() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.closed && !p.conn.IsClosed()
}

// Close closes the channel and the connection, failing what still waits.
func (p *Publisher) Close() error {
	err := p.conn.Close()
	<-p.stopped
	return err
}
