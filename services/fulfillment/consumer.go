package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ordertrace/ordertrace/pkg/orderevents"
	"github.com/ordertrace/ordertrace/pkg/retry"
	"github.com/ordertrace/ordertrace/pkg/telemetry"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
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
// inside a CONSUMER span that continues the trace of the order. It connects,
// and reconnects after losing the broker, by itself.
type Consumer struct {
	amqpURL   string
	prefetch  int
	connected atomic.Bool
	fulfiller *Fulfiller
	tel       *telemetry.Telemetry
	tracer    trace.Tracer
	log       *slog.Logger
	peer      []attribute.KeyValue

	workers      int
	maxAttempts  int
	retryBackoff time.Duration
}

func newConsumer(cfg Config, f *Fulfiller, tel *telemetry.Telemetry) *Consumer {
	return &Consumer{
		amqpURL: cfg.AMQPURL, prefetch: cfg.Prefetch, fulfiller: f, tel: tel, log: tel.Logger,
		tracer:       tel.Tracer("github.com/ordertrace/ordertrace/services/fulfillment"),
		peer:         telemetry.AMQPPeerAttributes(cfg.AMQPURL),
		workers:      cfg.Workers,
		maxAttempts:  cfg.MaxAttempts,
		retryBackoff: cfg.RetryBackoff,
	}
}

// Ready reports whether the consumer is connected and subscribed.
func (c *Consumer) Ready() bool { return c.connected.Load() }

// Run consumes until ctx ends. When the broker goes away (a restart, a lost
// connection, a deleted queue), it reconnects with growing pauses, declares
// the topology again and resubscribes; unacknowledged messages are
// redelivered by the broker and applied once, thanks to their message_id.
func (c *Consumer) Run(ctx context.Context) error {
	var backoff retry.Backoff
	for {
		began := time.Now()
		err := c.consume(ctx)
		c.connected.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(began) > time.Minute {
			backoff.Reset() // it had been working: start over
		}
		pause := backoff.Next()
		c.log.WarnContext(ctx, "consumer lost the broker; reconnecting", "error", err, "retry_in", pause.String())
		retry.Sleep(ctx, pause)
	}
}

// consume runs one session: connect, declare, subscribe, and process until
// ctx ends (then drain, returning nil) or the broker goes away (an error).
// When ctx ends, each worker finishes the message it holds; prefetched
// messages not yet started go back to the queue.
func (c *Consumer) consume(ctx context.Context) error {
	conn, err := amqp.DialConfig(c.amqpURL, amqp.Config{Properties: amqp.Table{"connection_name": "fulfillment-consumer"}})
	if err != nil {
		return fmt.Errorf("connect to rabbitmq: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err == nil {
		if err = orderevents.DeclareTopology(ch); err == nil {
			err = ch.Qos(c.prefetch, 0, false)
		}
	}
	var dlx *orderevents.Publisher
	if err == nil {
		dlx, err = orderevents.NewPublisher(conn)
	}
	if err != nil {
		return fmt.Errorf("rabbitmq: %w", err)
	}

	const consumerTag = "fulfillment"
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	deliveries, err := ch.Consume(orderevents.Queue, consumerTag, false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume %s: %w", orderevents.Queue, err)
	}
	c.connected.Store(true)
	var wg sync.WaitGroup
	for range c.workers {
		wg.Go(func() {
			for d := range deliveries {
				if ctx.Err() != nil {
					_ = d.Nack(false, true) // stopping: another consumer will take it
					continue
				}
				c.handle(ctx, dlx, d)
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

	select {
	case <-ctx.Done():
		if err := ch.Cancel(consumerTag, false); err != nil {
			c.log.WarnContext(ctx, "cancel consumer", "error", err)
		}
		<-drained
		return nil
	case amqpErr := <-closed:
		<-drained
		if amqpErr == nil {
			return errors.New("rabbitmq connection closed")
		}
		return fmt.Errorf("rabbitmq connection lost: %w", amqpErr)
	case <-drained:
		return fmt.Errorf("the broker ended the subscription to %s", orderevents.Queue)
	}
}

// handle processes one delivery: it retries a failing message a bounded
// number of times with growing pauses, then dead-letters it. It acknowledges
// only after the work is committed (or the dead letter confirmed). When stop
// ends between attempts, the message goes back to the queue instead.
func (c *Consumer) handle(stop context.Context, dlx *orderevents.Publisher, d amqp.Delivery) {
	parent := telemetry.ExtractAMQP(context.Background(), c.tel.Propagator, d.Headers)
	dest := telemetry.AMQPDestination(d.Exchange, d.RoutingKey, orderevents.Queue)
	opts := []trace.SpanStartOption{
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(c.peer...),
		trace.WithAttributes(telemetry.AMQPMessageAttributes(semconv.MessagingOperationTypeProcess, "process",
			dest, d.RoutingKey, d.MessageId, len(d.Body))...),
		trace.WithAttributes(
			semconv.MessagingDestinationSubscriptionName(orderevents.Queue),
			semconv.MessagingRabbitMQMessageDeliveryTag(int(d.DeliveryTag)),
		),
	}
	if producer := trace.SpanContextFromContext(parent); producer.IsValid() {
		// The producer's span is the parent, so the order reads as one trace;
		// the link says the same in the form messaging conventions use for batches.
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: producer}))
	}
	ctx, span := c.tracer.Start(parent, telemetry.AMQPSpanName("process", dest), opts...)
	defer span.End()
	if tenant := baggage.FromContext(ctx).Member("tenant.id").Value(); tenant != "" {
		span.SetAttributes(attribute.String("tenant.id", tenant))
	}
	if id := baggage.FromContext(ctx).Member("request.id").Value(); id != "" {
		span.SetAttributes(attribute.String("request.id", id))
	}
	ctx, cancel := context.WithTimeout(ctx, messageTimeout)
	defer cancel()

	var (
		orderID string
		result  outcome
		err     error
		attempt int
	)
	for attempt = 1; ; attempt++ {
		orderID, result, err = c.fulfiller.Apply(ctx, d.MessageId, d.Body)
		if err == nil || errors.Is(err, errPermanent) || attempt == c.maxAttempts || ctx.Err() != nil {
			break
		}
		pause := c.retryBackoff << (attempt - 1)
		span.AddEvent("retry", trace.WithAttributes(
			attribute.Int("fulfillment.attempt", attempt),
			semconv.ExceptionMessage(err.Error()),
			attribute.String("fulfillment.retry_in", pause.String()),
		))
		c.log.WarnContext(ctx, "fulfilment failed, retrying", "order_id", orderID, "attempt", attempt, "retry_in", pause, "error", err)
		select {
		case <-time.After(pause):
		case <-ctx.Done():
		case <-stop.Done():
			span.AddEvent("requeued: the consumer is stopping")
			span.SetAttributes(attribute.Int("fulfillment.attempts", attempt))
			_ = c.settle(ctx, d, dest, "nack", func() error { return d.Nack(false, true) })
			return
		}
	}
	span.SetAttributes(attribute.Int("fulfillment.attempts", attempt))

	if err == nil {
		span.SetAttributes(attribute.String("fulfillment.outcome", string(result)))
		if ackErr := c.settle(ctx, d, dest, "ack", func() error { return d.Ack(false) }); ackErr != nil {
			telemetry.Fail(span, fmt.Errorf("ack: %w", ackErr), "ack_failed")
		}
		c.log.InfoContext(ctx, "order fulfilment applied", "order_id", orderID, "outcome", result, "attempts", attempt)
		return
	}
	telemetry.Fail(span, err, errorType(err))
	span.SetAttributes(attribute.Bool("fulfillment.dead_lettered", true))
	c.log.ErrorContext(ctx, "message dead-lettered", "order_id", orderID, "attempts", attempt, "error", err)
	c.deadLetter(ctx, dlx, d, dest, err, attempt)
}

// settle acknowledges (ack) or rejects (nack) d in a settle span of its own,
// a child of the process span, as the messaging conventions define it: the
// broker forgets the message only once this span's operation succeeded.
func (c *Consumer) settle(ctx context.Context, d amqp.Delivery, dest, operation string, do func() error) error {
	_, span := c.tracer.Start(ctx, telemetry.AMQPSpanName(operation, dest),
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(c.peer...),
		trace.WithAttributes(telemetry.AMQPMessageAttributes(semconv.MessagingOperationTypeSettle, operation,
			dest, d.RoutingKey, d.MessageId, len(d.Body))...),
		trace.WithAttributes(semconv.MessagingRabbitMQMessageDeliveryTag(int(d.DeliveryTag))))
	defer span.End()
	err := do()
	telemetry.Fail(span, err, "settle_failed")
	return err
}

// deadLetter republishes d to the dead-letter exchange with the reason and the
// attempt count, then acknowledges it. If that publish is not routed and
// confirmed, the message is rejected instead and the queue's own
// dead-lettering moves it.
func (c *Consumer) deadLetter(ctx context.Context, dlx *orderevents.Publisher, d amqp.Delivery, dest string, cause error, attempts int) {
	// The message's own deadline may be what failed it; the dead letter gets
	// a fresh one.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), orderevents.ConfirmTimeout)
	defer cancel()
	headers := amqp.Table{}
	for k, v := range d.Headers {
		headers[k] = v
	}
	headers[headerDeadLetterReason] = cause.Error()
	headers[headerDeadLetterAttempts] = int32(attempts)
	err := dlx.Publish(ctx, orderevents.DeadLetterExchange, d.RoutingKey, amqp.Publishing{
		Headers: headers, ContentType: d.ContentType, DeliveryMode: amqp.Persistent,
		MessageId: d.MessageId, Timestamp: d.Timestamp, Type: d.Type, AppId: d.AppId, Body: d.Body,
	})
	if err != nil {
		c.log.ErrorContext(ctx, "dead-letter publish failed; rejecting instead", "error", err)
		_ = c.settle(ctx, d, dest, "nack", func() error { return d.Nack(false, false) })
		return
	}
	_ = c.settle(ctx, d, dest, "ack", func() error { return d.Ack(false) })
}

// errorType classes a failure for the error.type attribute.
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

// recordError marks a failed step's span, with its error.type.
func recordError(span trace.Span, err error) { telemetry.Fail(span, err, errorType(err)) }
