package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ordertrace/ordertrace/pkg/orderevents"
	"github.com/ordertrace/ordertrace/pkg/telemetry"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Headers added to a dead-lettered message, so whoever inspects the
// dead-letter queue sees why and after how many attempts.
const (
	headerDeadLetterReason   = "x-fulfillment-error"
	headerDeadLetterAttempts = "x-fulfillment-attempts"
)

// messageTimeout bounds all attempts at one message.
const messageTimeout = 30 * time.Second

// Consumer takes order.created messages off the queue and applies them, each
// inside a CONSUMER span that continues the trace of the order.
type Consumer struct {
	conn      *amqp.Connection
	ch        *amqp.Channel // consumes
	dlx       *amqp.Channel // publishes dead letters, in confirm mode
	fulfiller *Fulfiller
	tel       *telemetry.Telemetry
	tracer    trace.Tracer
	log       *slog.Logger
	peer      []attribute.KeyValue

	workers      int
	maxAttempts  int
	retryBackoff time.Duration
}

func openConsumer(amqpURL string, cfg Config, f *Fulfiller, tel *telemetry.Telemetry) (*Consumer, error) {
	conn, err := amqp.DialConfig(amqpURL, amqp.Config{Properties: amqp.Table{"connection_name": "fulfillment-consumer"}})
	if err != nil {
		return nil, fmt.Errorf("connect to rabbitmq: %w", err)
	}
	c := &Consumer{
		conn: conn, fulfiller: f, tel: tel, log: tel.Logger,
		tracer:       tel.Tracer("github.com/ordertrace/ordertrace/services/fulfillment"),
		peer:         telemetry.AMQPPeerAttributes(amqpURL),
		workers:      cfg.Workers,
		maxAttempts:  cfg.MaxAttempts,
		retryBackoff: cfg.RetryBackoff,
	}
	if c.ch, err = conn.Channel(); err == nil {
		if err = orderevents.DeclareTopology(c.ch); err == nil {
			err = c.ch.Qos(cfg.Prefetch, 0, false)
		}
	}
	if err == nil {
		if c.dlx, err = conn.Channel(); err == nil {
			err = c.dlx.Confirm(false)
		}
	}
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("rabbitmq consumer channel: %w", err)
	}
	return c, nil
}

// Ready reports whether the consumer is connected.
func (c *Consumer) Ready() bool { return !c.conn.IsClosed() }

// Close closes the connection.
func (c *Consumer) Close() error { return c.conn.Close() }

// Run consumes until ctx ends or the connection is lost. On ctx's end it
// cancels the subscription, lets every worker finish (and acknowledge) the
// message it holds, and returns nil.
func (c *Consumer) Run(ctx context.Context) error {
	const consumerTag = "fulfillment"
	deliveries, err := c.ch.Consume(orderevents.Queue, consumerTag, false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume %s: %w", orderevents.Queue, err)
	}
	var wg sync.WaitGroup
	for range c.workers {
		wg.Go(func() {
			for d := range deliveries {
				c.handle(d)
			}
		})
	}
	// The deliveries end when we cancel, or when the broker does (the queue
	// was deleted, the channel closed): then the workers return.
	drained := make(chan struct{})
	go func() {
		wg.Wait()
		close(drained)
	}()
	c.log.InfoContext(ctx, "consuming", "queue", orderevents.Queue, "workers", c.workers)

	closed := c.conn.NotifyClose(make(chan *amqp.Error, 1))
	select {
	case <-ctx.Done():
		// Messages already prefetched are still delivered and handled; the
		// broker sends no new ones.
		if err := c.ch.Cancel(consumerTag, false); err != nil {
			c.log.WarnContext(ctx, "cancel consumer", "error", err)
		}
		<-drained
		return nil
	case amqpErr := <-closed:
		<-drained
		return fmt.Errorf("rabbitmq connection lost: %v", amqpErr)
	case <-drained:
		return fmt.Errorf("the broker ended the subscription to %s", orderevents.Queue)
	}
}

// handle processes one delivery: it retries a failing message a bounded
// number of times with growing pauses, then dead-letters it. It acknowledges
// only after the work is committed (or the dead letter confirmed).
func (c *Consumer) handle(d amqp.Delivery) {
	parent := telemetry.ExtractAMQP(context.Background(), c.tel.Propagator, d.Headers)
	ctx, span := c.tracer.Start(parent, "process "+orderevents.Queue,
		trace.WithSpanKind(trace.SpanKindConsumer),
		// The producer's span is the parent, so the order reads as one trace;
		// the link says the same in the form messaging conventions use for batches.
		trace.WithLinks(trace.LinkFromContext(parent, attribute.String("messaging.link", "producer"))),
		trace.WithAttributes(c.peer...),
		trace.WithAttributes(
			semconv.MessagingSystemRabbitMQ,
			semconv.MessagingOperationTypeProcess,
			semconv.MessagingOperationName("process"),
			semconv.MessagingDestinationName(d.Exchange),
			semconv.MessagingRabbitMQDestinationRoutingKey(d.RoutingKey),
			semconv.MessagingDestinationSubscriptionName(orderevents.Queue),
			semconv.MessagingMessageID(d.MessageId),
			semconv.MessagingMessageBodySize(len(d.Body)),
			semconv.MessagingRabbitMQMessageDeliveryTag(int(d.DeliveryTag)),
		))
	defer span.End()
	if tenant := baggage.FromContext(ctx).Member("tenant.id").Value(); tenant != "" {
		span.SetAttributes(attribute.String("tenant.id", tenant))
	}
	ctx, cancel := context.WithTimeout(ctx, messageTimeout)
	defer cancel()

	var (
		orderID string
		result  outcome
		err     error
		attempt int
	)
	for attempt = 1; attempt <= c.maxAttempts; attempt++ {
		orderID, result, err = c.fulfiller.Apply(ctx, d.MessageId, d.Body)
		if err == nil || errors.Is(err, errPermanent) || attempt == c.maxAttempts {
			break
		}
		pause := c.retryBackoff << (attempt - 1)
		span.AddEvent("retry", trace.WithAttributes(
			attribute.Int("fulfillment.attempt", attempt),
			attribute.String("error.message", err.Error()),
			attribute.String("fulfillment.retry_in", pause.String()),
		))
		c.log.WarnContext(ctx, "fulfilment failed, retrying", "order_id", orderID, "attempt", attempt, "retry_in", pause, "error", err)
		select {
		case <-time.After(pause):
		case <-ctx.Done():
		}
	}
	attempt = min(attempt, c.maxAttempts)
	span.SetAttributes(attribute.Int("fulfillment.attempts", attempt))

	if err == nil {
		span.SetAttributes(attribute.String("fulfillment.outcome", string(result)))
		if ackErr := d.Ack(false); ackErr != nil {
			recordError(span, fmt.Errorf("ack: %w", ackErr))
		}
		c.log.InfoContext(ctx, "order fulfilment applied", "order_id", orderID, "outcome", result, "attempts", attempt)
		return
	}
	recordError(span, err)
	span.SetAttributes(attribute.Bool("fulfillment.dead_lettered", true), attribute.String("error.type", errorType(err)))
	c.log.ErrorContext(ctx, "message dead-lettered", "order_id", orderID, "attempts", attempt, "error", err)
	c.deadLetter(ctx, d, err, attempt)
}

// deadLetter republishes d to the dead-letter exchange with the reason and the
// attempt count, then acknowledges it. If that publish is not confirmed, the
// message is rejected instead and the queue's own dead-lettering moves it.
func (c *Consumer) deadLetter(ctx context.Context, d amqp.Delivery, cause error, attempts int) {
	headers := amqp.Table{}
	for k, v := range d.Headers {
		headers[k] = v
	}
	headers[headerDeadLetterReason] = cause.Error()
	headers[headerDeadLetterAttempts] = int32(attempts)
	confirm, err := c.dlx.PublishWithDeferredConfirmWithContext(ctx, orderevents.DeadLetterExchange, d.RoutingKey, false, false, amqp.Publishing{
		Headers: headers, ContentType: d.ContentType, DeliveryMode: amqp.Persistent,
		MessageId: d.MessageId, Timestamp: d.Timestamp, Type: d.Type, AppId: d.AppId, Body: d.Body,
	})
	if err == nil {
		var acked bool
		if acked, err = confirm.WaitContext(ctx); err == nil && !acked {
			err = errors.New("dead letter not confirmed")
		}
	}
	if err != nil {
		c.log.ErrorContext(ctx, "dead-letter publish failed; rejecting instead", "error", err)
		_ = d.Nack(false, false)
		return
	}
	_ = d.Ack(false)
}

func errorType(err error) string {
	switch {
	case errors.Is(err, errPermanent):
		return "invalid_message"
	case errors.Is(err, errOrderNotFound):
		return "order_not_found"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	default:
		return "apply_failed"
	}
}

func recordError(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
}
