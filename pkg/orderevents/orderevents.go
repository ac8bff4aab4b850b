// Package orderevents is the contract between the orders service and the
// fulfillment service: the RabbitMQ topology, the message body, one function
// that declares the topology so either side can start first, and the
// confirming Publisher both publish with.
package orderevents

import (
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// The names of the messaging topology: a contract that orders, fulfillment,
// the dashboards and the workshop all rely on.
const (
	Exchange           = "orders"                        // durable topic exchange
	RoutingKeyCreated  = "order.created"                 // routing key of a new order
	Queue              = "fulfillment.order-created"     // durable queue bound to Exchange
	DeadLetterExchange = "orders.dlx"                    // where Queue dead-letters
	DeadLetterQueue    = "fulfillment.order-created.dlq" // bound to DeadLetterExchange

	// DeliveryLimit is the broker's own bound on redeliveries of one message
	// (a consumer that crashes on it every time); past it RabbitMQ
	// dead-letters the message. Consumers retry less often than this themselves.
	DeliveryLimit = 5
)

// Item is one line of an order.
type Item struct {
	SKU            string `json:"sku"`
	Quantity       int    `json:"quantity"`
	UnitPriceCents int64  `json:"unit_price_cents"`
}

// OrderCreated is the body of an order.created message. It carries IDs and
// amounts only: nothing personal travels through the broker.
type OrderCreated struct {
	OrderID    string    `json:"order_id"`
	TenantID   string    `json:"tenant_id,omitempty"`
	Items      []Item    `json:"items"`
	TotalCents int64     `json:"total_cents"`
	Currency   string    `json:"currency"`
	CreatedAt  time.Time `json:"created_at"`
}

// DeclareTopology declares the exchanges, queues and bindings. Declaring is
// idempotent, so the publisher and the consumer both call it at start.
//
// The queue is a quorum queue: durable, replicated when RabbitMQ runs as a
// cluster, with a delivery limit. Quorum queues behave the same on RabbitMQ
// 3.10 and 4.x, which is why they are chosen over classic queues here.
func DeclareTopology(ch *amqp.Channel) error {
	for _, ex := range []string{Exchange, DeadLetterExchange} {
		if err := ch.ExchangeDeclare(ex, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
			return fmt.Errorf("declare exchange %s: %w", ex, err)
		}
	}
	queues := []struct {
		name, exchange string
		args           amqp.Table
	}{
		{DeadLetterQueue, DeadLetterExchange, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum}},
		{Queue, Exchange, amqp.Table{
			amqp.QueueTypeArg:           amqp.QueueTypeQuorum,
			"x-dead-letter-exchange":    DeadLetterExchange,
			"x-dead-letter-routing-key": RoutingKeyCreated,
			"x-delivery-limit":          DeliveryLimit,
		}},
	}
	for _, q := range queues {
		if _, err := ch.QueueDeclare(q.name, true, false, false, false, q.args); err != nil {
			return fmt.Errorf("declare queue %s: %w", q.name, err)
		}
		if err := ch.QueueBind(q.name, RoutingKeyCreated, q.exchange, false, nil); err != nil {
			return fmt.Errorf("bind queue %s: %w", q.name, err)
		}
	}
	return nil
}
