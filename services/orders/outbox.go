package main

// The outbox: how an order's message leaves the service without being lost
// or sent for an order that does not exist. The message is not published
// while the order is placed; it is stored as an outbox row in the order's own
// transaction (Store.CreateOrder), and the relay below publishes the rows
// that have committed, marking each sent once the broker confirmed it.
//
// The message half of the trace is made here, as two PRODUCER spans:
//   - "create" (orderCreated), a child of order.process around the outbox
//     INSERT. The row stores this span's W3C headers, so the consumer
//     continues the order's trace whenever the message is sent.
//   - "publish" (Relay.send), the relay's send: the root of a trace of its
//     own, with a link to the "create" span.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/ordertrace/ordertrace/pkg/orderevents"
	"github.com/ordertrace/ordertrace/pkg/retry"
	"github.com/ordertrace/ordertrace/pkg/scenario"
	"github.com/ordertrace/ordertrace/pkg/telemetry"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// OutboxMessage is a message stored with its order and published by the
// relay once the transaction has committed.
type OutboxMessage struct {
	MessageID  string
	Exchange   string
	RoutingKey string
	Headers    map[string]string // W3C trace context and baggage
	Body       []byte
}

// Enqueue is called inside the order's transaction. It returns the message to
// store, the context to store it in (the message's PRODUCER span), and a
// function that ends that span with the outcome of the transaction.
type Enqueue func(ctx context.Context) (context.Context, OutboxMessage, func(error))

// outboxChannel is the LISTEN/NOTIFY channel that wakes the relay.
const outboxChannel = "ordertrace_outbox"

// orderCreated makes the order's order.created message, and the Enqueue that
// stores it inside a PRODUCER span. The message is only stored there
// (messaging.operation.type "create"); the relay publishes it later, and its
// headers carry this span's context, so the consumer continues this trace and
// the relay's send span links to it.
func (s *Service) orderCreated(ctx context.Context, order Order) (Enqueue, error) {
	var event any = orderevents.OrderCreated{
		OrderID:    order.ID,
		TenantID:   order.TenantID,
		Items:      eventItems(order.Items),
		TotalCents: order.TotalCents,
		Currency:   order.Currency,
		CreatedAt:  time.Now().UTC(),
	}
	if rand.Float64() < s.flags.Number(ctx, scenario.PoisonMessages) {
		event = poisonEvent(event.(orderevents.OrderCreated))
	}
	body, err := json.Marshal(event)
	if err != nil {
		return nil, fmt.Errorf("encode order event: %w", err)
	}
	return func(ctx context.Context) (context.Context, OutboxMessage, func(error)) {
		messageID := uuid.NewString()
		dest := telemetry.AMQPDestination(orderevents.Exchange, orderevents.RoutingKeyCreated, "")
		ctx, span := s.tracer.Start(ctx, telemetry.AMQPSpanName("create", dest),
			trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(telemetry.AMQPMessageAttributes(semconv.MessagingOperationTypeCreate, "create",
				dest, orderevents.RoutingKeyCreated, messageID, len(body))...))
		headers := map[string]string{}
		s.prop.Inject(ctx, propagation.MapCarrier(headers)) // traceparent, tracestate, baggage
		msg := OutboxMessage{
			MessageID: messageID, Exchange: orderevents.Exchange, RoutingKey: orderevents.RoutingKeyCreated,
			Headers: headers, Body: body,
		}
		return ctx, msg, func(err error) {
			recordError(span, err)
			span.End()
		}
	}, nil
}

// poisonEvent is the order.created event as a careless release might have
// written it (workshop scenario poison-messages): its lines renamed, so
// fulfillment finds no items and can never apply it.
func poisonEvent(ev orderevents.OrderCreated) any {
	return struct {
		orderevents.OrderCreated
		Items []orderevents.Item `json:"items,omitempty"`
		Lines []orderevents.Item `json:"lines"`
	}{OrderCreated: ev, Lines: ev.Items}
}

// eventItems are the order's lines as the message carries them.
func eventItems(items []OrderItem) []orderevents.Item {
	out := make([]orderevents.Item, len(items))
	for i, it := range items {
		out[i] = orderevents.Item{SKU: it.SKU, Quantity: it.Quantity, UnitPriceCents: it.UnitPriceCents}
	}
	return out
}

// The relay's rhythm: how many rows it claims at once, and how often it
// looks without being woken (the safety net under LISTEN/NOTIFY). While the
// broker is away it backs off with retry.Backoff.
const (
	relayBatch     = 100
	relayPoll      = 2 * time.Second
	relayWorkBound = 30 * time.Second // one batch, even during shutdown
	observeBound   = 2 * time.Second  // one look at the backlog, at metric collection
)

// Relay publishes the outbox: it claims unsent rows (FOR UPDATE SKIP
// LOCKED, so several orders replicas share the work), publishes each with
// publisher confirms, and marks it sent only after the broker confirmed it,
// in the same transaction as the claim. A crash between the confirm and the
// commit publishes the row again: the consumer is idempotent by message_id.
//
// Its database work uses a pool of its own without tracing: polling every
// few seconds would otherwise fill the trace store with empty traces. Each
// message it sends gets a PRODUCER span linked to the order's trace.
type Relay struct {
	pool    *pgxpool.Pool
	amqpURL string
	tel     *telemetry.Telemetry
	tracer  trace.Tracer
	log     *slog.Logger
	peer    []attribute.KeyValue
	flags   scenario.Switches

	conn      *amqp.Connection
	publisher *orderevents.Publisher
	observing metric.Registration // the backlog gauges' callback
}

func newRelay(ctx context.Context, databaseURL, amqpURL string, tel *telemetry.Telemetry, flags scenario.Switches) (*Relay, error) {
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	cfg.MaxConns = 3 // one listens, one works, one measures the backlog
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("relay pool: %w", err)
	}
	r := &Relay{
		pool: pool, amqpURL: amqpURL, tel: tel, log: tel.Logger, flags: flags,
		tracer: tel.Tracer("github.com/ordertrace/ordertrace/services/orders"),
		peer:   telemetry.AMQPPeerAttributes(amqpURL),
	}
	if err := r.observeBacklog(); err != nil {
		pool.Close()
		return nil, err
	}
	return r, nil
}

// observeBacklog registers the outbox's gauges, read when metrics are
// collected: how many messages wait, and how long the oldest has waited (0
// when none does), which the alert on outbox lag watches. One count over the
// outbox_unsent partial index, so the cost follows the backlog, not the
// table. Every orders replica reports the same outbox: take the max, not
// the sum.
func (r *Relay) observeBacklog() error {
	m := r.tel.MeterProvider.Meter("github.com/ordertrace/ordertrace/services/orders")
	lag, err1 := m.Float64ObservableGauge("ordertrace.outbox.lag", metric.WithUnit("s"),
		metric.WithDescription("Age of the oldest outbox message not yet published; 0 when none waits."))
	pending, err2 := m.Int64ObservableGauge("ordertrace.outbox.pending", metric.WithUnit("{message}"),
		metric.WithDescription("Outbox messages not yet published."))
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("outbox metrics: %w", err)
	}
	reg, err := m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		ctx, cancel := context.WithTimeout(ctx, observeBound)
		defer cancel()
		var (
			n   int64
			age float64
		)
		err := r.pool.QueryRow(ctx, `SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
			FROM outbox WHERE sent_at IS NULL`).Scan(&n, &age)
		if err != nil {
			return fmt.Errorf("observe the outbox: %w", err) // no points this time; the SDK reports the error
		}
		o.ObserveInt64(pending, n)
		o.ObserveFloat64(lag, age)
		return nil
	}, lag, pending)
	if err != nil {
		return fmt.Errorf("outbox metrics: %w", err)
	}
	r.observing = reg
	return nil
}

// Run relays until ctx ends, then finishes the batch in hand and returns.
func (r *Relay) Run(ctx context.Context) {
	defer r.pool.Close()
	defer r.observing.Unregister() // before the pool closes: the last collection must not query it
	defer r.disconnect()
	wake := make(chan struct{}, 1)
	go r.listen(ctx, wake)

	var backoff retry.Backoff
	for ctx.Err() == nil {
		n, err := r.relayBatch(ctx)
		switch {
		case err != nil:
			pause := backoff.Next()
			r.log.WarnContext(ctx, "outbox relay: batch failed; backing off", "error", err, "retry_in", pause.String())
			r.disconnect()
			retry.Sleep(ctx, pause)
			continue
		case n == relayBatch:
			continue // there is more
		}
		backoff.Reset()
		select {
		case <-wake:
		case <-time.After(relayPoll):
		case <-ctx.Done():
		}
	}
}

// listen turns NOTIFYs on the outbox channel into wake-ups, reconnecting
// when its connection drops. Polling covers the gaps.
func (r *Relay) listen(ctx context.Context, wake chan<- struct{}) {
	for ctx.Err() == nil {
		err := r.pool.AcquireFunc(ctx, func(c *pgxpool.Conn) error {
			if _, err := c.Exec(ctx, "LISTEN "+outboxChannel); err != nil {
				return err
			}
			for {
				if _, err := c.Conn().WaitForNotification(ctx); err != nil {
					return err
				}
				select {
				case wake <- struct{}{}:
				default:
				}
			}
		})
		if ctx.Err() == nil {
			r.log.DebugContext(ctx, "outbox relay: listen connection lost", "error", err)
			retry.Sleep(ctx, relayPoll)
		}
	}
}

type outboxRow struct {
	id                   int64
	messageID            string
	exchange, routingKey string
	headers              map[string]string
	body                 []byte
	attempts             int
}

// relayBatch publishes up to relayBatch unsent rows and marks those the
// broker confirmed, in one transaction. It returns how many rows it claimed.
func (r *Relay) relayBatch(ctx context.Context) (int, error) {
	// A batch, once started, finishes even if ctx ends (shutdown), within a bound.
	work, cancel := context.WithTimeout(context.WithoutCancel(ctx), relayWorkBound)
	defer cancel()
	var (
		claimed int
		sendErr error // committed all the same: what was confirmed stays marked
	)
	err := pgx.BeginFunc(work, r.pool, func(tx pgx.Tx) error {
		rows, _ := tx.Query(work, `SELECT id, message_id::text, exchange, routing_key, headers, body, attempts
			FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED`, relayBatch)
		batch, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (outboxRow, error) {
			var o outboxRow
			err := row.Scan(&o.id, &o.messageID, &o.exchange, &o.routingKey, &o.headers, &o.body, &o.attempts)
			return o, err
		})
		if err != nil || len(batch) == 0 {
			return err
		}
		claimed = len(batch)
		if err := r.connect(); err != nil {
			return err
		}
		var sent []int64
		for _, o := range batch {
			if sendErr = r.send(work, o); sendErr != nil {
				_, _ = tx.Exec(work, "UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1", o.id, sendErr.Error())
				break // the broker is in trouble: keep the rest for the next batch
			}
			sent = append(sent, o.id)
		}
		if _, err := tx.Exec(work, "UPDATE outbox SET sent_at = now() WHERE id = ANY($1)", sent); err != nil {
			return fmt.Errorf("mark sent: %w", err)
		}
		return nil
	})
	return claimed, errors.Join(err, sendErr)
}

// send publishes one row in a PRODUCER span of its own, linked to the span
// that created the message; the message keeps the creating span's context,
// so the consumer continues the order's trace.
func (r *Relay) send(ctx context.Context, o outboxRow) (err error) {
	created := r.tel.Propagator.Extract(ctx, propagation.MapCarrier(o.headers))
	dest := telemetry.AMQPDestination(o.exchange, o.routingKey, "")
	ctx, span := r.tracer.Start(context.WithoutCancel(ctx), telemetry.AMQPSpanName("publish", dest),
		trace.WithNewRoot(),
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithLinks(trace.LinkFromContext(created)),
		trace.WithAttributes(r.peer...),
		trace.WithAttributes(telemetry.AMQPMessageAttributes(semconv.MessagingOperationTypeSend, "publish",
			dest, o.routingKey, o.messageID, len(o.body))...),
		trace.WithAttributes(attribute.Int("outbox.attempts", o.attempts+1)))
	defer func() {
		recordError(span, err)
		span.End()
	}()
	headers := amqp.Table{}
	for k, v := range o.headers {
		headers[k] = v
	}
	if r.flags.On(ctx, scenario.PropagationOff) {
		// Workshop scenario: the message leaves without its trace context,
		// and fulfillment starts a trace of its own.
		for _, field := range r.tel.Propagator.Fields() {
			delete(headers, field)
		}
	}
	err = r.publisher.Publish(ctx, o.exchange, o.routingKey, amqp.Publishing{
		Headers: headers, ContentType: "application/json", DeliveryMode: amqp.Persistent,
		MessageId: o.messageID, Timestamp: time.Now().UTC(), Type: o.routingKey, AppId: "orders", Body: o.body,
	})
	if err != nil {
		return fmt.Errorf("publish %s: %w", o.messageID, err)
	}
	return nil
}

// connect opens the broker connection and the confirming publisher if they
// are not open, declaring the topology each time (the broker may be new).
func (r *Relay) connect() error {
	if r.conn != nil && !r.conn.IsClosed() {
		select {
		case <-r.publisher.Done():
		default:
			return nil
		}
	}
	r.disconnect()
	conn, err := amqp.DialConfig(r.amqpURL, amqp.Config{Properties: amqp.Table{"connection_name": "orders-relay"}})
	if err != nil {
		return fmt.Errorf("connect to rabbitmq: %w", err)
	}
	ch, err := conn.Channel()
	if err == nil {
		err = orderevents.DeclareTopology(ch)
		_ = ch.Close()
	}
	var p *orderevents.Publisher
	if err == nil {
		p, err = orderevents.NewPublisher(conn)
	}
	if err != nil {
		_ = conn.Close()
		return fmt.Errorf("rabbitmq: %w", err)
	}
	r.conn, r.publisher = conn, p
	r.log.Info("outbox relay connected to rabbitmq")
	return nil
}

func (r *Relay) disconnect() {
	if r.conn != nil {
		_ = r.conn.Close()
	}
	r.conn, r.publisher = nil, nil
}
