package main

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/ordertrace/ordertrace/pkg/orderevents"
	"github.com/ordertrace/ordertrace/pkg/telemetry"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Publisher publishes order events, each inside a PRODUCER span whose context
// travels in the message headers.
type Publisher struct {
	conn   *amqp.Connection
	events *orderevents.Publisher // confirms and returns
	tracer trace.Tracer
	tel    *telemetry.Telemetry
	peer   []attribute.KeyValue
}

func openPublisher(amqpURL string, tel *telemetry.Telemetry) (*Publisher, error) {
	conn, err := amqp.DialConfig(amqpURL, amqp.Config{Properties: amqp.Table{"connection_name": "orders-publisher"}})
	if err != nil {
		return nil, fmt.Errorf("connect to rabbitmq: %w", err)
	}
	ch, err := conn.Channel()
	if err == nil {
		err = orderevents.DeclareTopology(ch)
		_ = ch.Close()
	}
	var events *orderevents.Publisher
	if err == nil {
		events, err = orderevents.NewPublisher(conn)
	}
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("rabbitmq: %w", err)
	}
	return &Publisher{
		conn:   conn,
		events: events,
		tracer: tel.Tracer("github.com/ordertrace/ordertrace/services/orders"),
		tel:    tel,
		peer:   telemetry.AMQPPeerAttributes(amqpURL),
	}, nil
}

// PublishOrderCreated publishes body as an order.created message inside a
// PRODUCER span named and described as the messaging conventions say, and
// waits until the broker has routed and confirmed it.
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

	err = p.events.Publish(ctx, orderevents.Exchange, orderevents.RoutingKeyCreated, amqp.Publishing{
		Headers:      telemetry.InjectAMQP(ctx, p.tel.Propagator, nil), // traceparent, tracestate, baggage
		ContentType:  "application/json",
		DeliveryMode: amqp.Persistent,
		MessageId:    messageID,
		Timestamp:    time.Now().UTC(),
		Type:         orderevents.RoutingKeyCreated,
		AppId:        "orders",
		Body:         body,
	})
	if err != nil {
		return fmt.Errorf("publish order.created: %w", err)
	}
	return nil
}

// Ready reports whether the publisher can publish.
func (p *Publisher) Ready() bool { return !p.conn.IsClosed() && p.events.Ready() }

// Done is closed when the connection to the broker is lost for good.
func (p *Publisher) Done() <-chan struct{} { return p.events.Done() }

// Close closes the channel and the connection.
func (p *Publisher) Close() error {
	_ = p.events.Close()
	return p.conn.Close()
}
