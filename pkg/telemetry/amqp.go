package telemetry

import (
	"context"
	"net"
	"net/url"
	"strconv"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// AMQPCarrier lets a propagator read and write W3C trace headers
// (traceparent, tracestate, baggage) in the headers of an AMQP message.
// Headers come from the network, so Get accepts only strings and byte
// slices and treats any other type as absent instead of panicking.
type AMQPCarrier amqp.Table

var _ propagation.TextMapCarrier = AMQPCarrier(nil)

// Get returns the header as a string, or "" if it is missing or not text.
func (c AMQPCarrier) Get(key string) string {
	switch v := c[key].(type) {
	case string:
		return v
	case []byte:
		return string(v)
	default:
		return ""
	}
}

// Set stores the header. It does nothing on a nil carrier: use InjectAMQP,
// which allocates the table when needed.
func (c AMQPCarrier) Set(key, value string) {
	if c != nil {
		c[key] = value
	}
}

// Keys lists the header names.
func (c AMQPCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// InjectAMQP writes the trace context and baggage of ctx into headers and
// returns them (a new table when headers is nil).
func InjectAMQP(ctx context.Context, prop propagation.TextMapPropagator, headers amqp.Table) amqp.Table {
	if headers == nil {
		headers = amqp.Table{}
	}
	prop.Inject(ctx, AMQPCarrier(headers))
	return headers
}

// ExtractAMQP returns ctx with the remote span context and baggage found in
// headers, within the trust policy (FilterBaggage, FilterTraceState): anyone
// who can publish to the broker can set them. Missing or malformed headers
// leave ctx as it was.
func ExtractAMQP(ctx context.Context, prop propagation.TextMapPropagator, headers amqp.Table) context.Context {
	ctx = trustedExtract{TextMapPropagator: prop}.Extract(ctx, AMQPCarrier(headers))
	if b := baggage.FromContext(ctx); b.Len() > 0 {
		ctx = baggage.ContextWithBaggage(ctx, FilterBaggage(b))
	}
	return ctx
}

// AMQPDestination is a RabbitMQ message's messaging.destination.name in the
// messaging conventions: "{exchange}:{routing key}" where it is sent, and
// "{exchange}:{routing key}:{queue}" where it is received (queue not "").
// An empty exchange (the default one) is written as "amq.default".
func AMQPDestination(exchange, routingKey, queue string) string {
	if exchange == "" {
		exchange = "amq.default"
	}
	d := exchange + ":" + routingKey
	if queue != "" {
		d += ":" + queue
	}
	return d
}

// AMQPSpanName is a messaging span's name in the conventions:
// "{messaging.operation.name} {destination}". The destination is the
// exchange, routing key and queue, never a message's own values, so the
// names stay few.
func AMQPSpanName(operationName, destination string) string {
	return operationName + " " + destination
}

// AMQPMessageAttributes are what every span about one RabbitMQ message says,
// in the messaging conventions: the operation (its type, such as
// semconv.MessagingOperationTypeSend, and its name), where the message goes
// (destination, from AMQPDestination), and which message it is. Callers add
// what is particular to their side.
func AMQPMessageAttributes(operation attribute.KeyValue, operationName, destination, routingKey, messageID string, bodySize int) []attribute.KeyValue {
	return []attribute.KeyValue{
		semconv.MessagingSystemRabbitMQ,
		operation,
		semconv.MessagingOperationName(operationName),
		semconv.MessagingDestinationName(destination),
		semconv.MessagingRabbitMQDestinationRoutingKey(routingKey),
		semconv.MessagingMessageID(messageID),
		semconv.MessagingMessageBodySize(bodySize),
	}
}

// AMQPPeerAttributes names the broker of amqpURL for messaging spans
// (server.address, server.port), leaving its credentials out.
func AMQPPeerAttributes(amqpURL string) []attribute.KeyValue {
	u, err := url.Parse(amqpURL)
	if err != nil {
		return nil
	}
	host, portText, err := net.SplitHostPort(u.Host)
	if err != nil {
		return []attribute.KeyValue{semconv.ServerAddress(u.Hostname())}
	}
	port, _ := strconv.Atoi(portText)
	return []attribute.KeyValue{semconv.ServerAddress(host), semconv.ServerPort(port)}
}
