package instrumented

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ordertrace/ordertrace/pkg/telemetry"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/semconv/v1.43.0/dbconv"
	"go.opentelemetry.io/otel/trace"
)

// RedisOptions are what a caller decides about its Redis client: how long it
// waits and whether it retries. Each zero field keeps go-redis's default, and
// values the URL sets (dial_timeout, read_timeout, write_timeout,
// max_retries) win over these.
type RedisOptions struct {
	DialTimeout, ReadTimeout, WriteTimeout time.Duration
	MaxRetries                             int // -1: never retry
}

// Redis opens a client whose commands become CLIENT spans and whose pool
// becomes a metric, in the current database conventions (the hook below):
// the command's name, never its keys, arguments or values. Command durations
// are not recorded here: the collector derives them from the spans
// (telemetry.DuplicateInstruments).
func Redis(redisURL string, tel *telemetry.Telemetry, o RedisOptions) (*redis.Client, error) {
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		return nil, fmt.Errorf("parse REDIS_URL: %w", err)
	}
	// CLIENT SETINFO (Redis 7.2+) and CLIENT MAINT_NOTIFICATIONS (managed
	// Redis) fail on a plain older server on every new connection, leaving an
	// error span in the trace. The suite needs neither.
	opts.DisableIdentity = true
	opts.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	if opts.DialTimeout == 0 {
		opts.DialTimeout = o.DialTimeout
	}
	if opts.ReadTimeout == 0 {
		opts.ReadTimeout = o.ReadTimeout
	}
	if opts.WriteTimeout == 0 {
		opts.WriteTimeout = o.WriteTimeout
	}
	if opts.MaxRetries == 0 {
		opts.MaxRetries = o.MaxRetries
	}
	rdb := redis.NewClient(opts)
	hook := newRedisHook(opts, tel)
	if err := hook.observePool(rdb); err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("instrument redis: %w", err)
	}
	rdb.AddHook(hook)
	return rdb, nil
}

// redisHook traces each command and pipeline. go-redis's own
// redisotel writes conventions that have since been replaced (db.system,
// db.statement, db.redis.num_cmd, db.client.connections.*); this hook writes
// the ones the suite imports, and nothing a command carries.
type redisHook struct {
	tracer trace.Tracer
	meter  metric.Meter
	attrs  []attribute.KeyValue // the server's: on every span
	pool   string
}

func newRedisHook(opts *redis.Options, tel *telemetry.Telemetry) *redisHook {
	h := &redisHook{
		tracer: tel.Tracer("github.com/ordertrace/ordertrace/pkg/telemetry/instrumented"),
		meter:  tel.MeterProvider.Meter("github.com/ordertrace/ordertrace/pkg/telemetry/instrumented"),
		attrs:  []attribute.KeyValue{semconv.DBSystemNameRedis, semconv.DBNamespace(strconv.Itoa(opts.DB))},
		pool:   opts.Addr,
	}
	if host, port, err := net.SplitHostPort(opts.Addr); err == nil {
		p, _ := strconv.Atoi(port)
		h.attrs = append(h.attrs, semconv.ServerAddress(host), semconv.ServerPort(p))
	}
	return h
}

// DialHook leaves connecting untraced: its cost shows in the command that
// waited for it.
func (h *redisHook) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook makes one command a span named after it ("MGET").
func (h *redisHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		return h.observe(ctx, strings.ToUpper(cmd.Name()), 1, func(ctx context.Context) error { return next(ctx, cmd) })
	}
}

// ProcessPipelineHook makes a pipeline one span: "BATCH SET" when every
// command is a SET, "BATCH" when they differ, with db.operation.batch.size.
func (h *redisHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		name := "BATCH"
		if len(cmds) > 0 {
			first := strings.ToUpper(cmds[0].Name())
			name += " " + first
			for _, c := range cmds[1:] {
				if !strings.EqualFold(c.Name(), first) {
					name = "BATCH"
					break
				}
			}
		}
		return h.observe(ctx, name, len(cmds), func(ctx context.Context) error { return next(ctx, cmds) })
	}
}

// observe runs one operation in its span.
func (h *redisHook) observe(ctx context.Context, operation string, batch int, run func(context.Context) error) error {
	if parent := trace.SpanFromContext(ctx); parent.SpanContext().IsValid() && !parent.IsRecording() {
		return run(ctx) // the trace was not sampled: no span to start, nothing to allocate
	}
	attrs := append(h.attrs[:len(h.attrs):len(h.attrs)], semconv.DBOperationName(operation))
	if batch > 1 {
		attrs = append(attrs, semconv.DBOperationBatchSize(batch))
	}
	ctx, span := h.tracer.Start(ctx, operation, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	err := run(ctx)
	// A missing key (redis.Nil) is an answer, not a failure.
	if err != nil && !errors.Is(err, redis.Nil) {
		class, code := redisErrorType(err)
		if code != "" {
			span.SetAttributes(semconv.DBResponseStatusCode(code))
		}
		telemetry.Fail(span, err, class)
	}
	span.End()
	return err
}

// redisErrorType is a failure's error.type and, for an error Redis answered
// with, its db.response.status_code: the error's prefix ("ERR", "WRONGTYPE").
func redisErrorType(err error) (class, code string) {
	var redisErr redis.Error
	var netErr net.Error
	switch {
	case errors.As(err, &redisErr):
		code, _, _ = strings.Cut(redisErr.Error(), " ")
		return code, code
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &netErr) && netErr.Timeout():
		return "timeout", ""
	case errors.Is(err, context.Canceled):
		return "canceled", ""
	case errors.Is(err, redis.ErrClosed), errors.Is(err, redis.ErrPoolTimeout):
		return "pool", ""
	default:
		var opErr *net.OpError
		if errors.As(err, &opErr) {
			return "connection", ""
		}
		return semconv.ErrorTypeOther.Value.AsString(), ""
	}
}

// observePool reports the client's connections, idle and in use
// (db.client.connection.count), when metrics are collected.
func (h *redisHook) observePool(rdb *redis.Client) error {
	count, err := dbconv.NewClientConnectionCountObservable(h.meter)
	if err != nil {
		return err
	}
	pool := count.AttrClientConnectionPoolName(h.pool)
	idle := metric.WithAttributes(pool, count.AttrClientConnectionState(dbconv.ClientConnectionStateIdle))
	used := metric.WithAttributes(pool, count.AttrClientConnectionState(dbconv.ClientConnectionStateUsed))
	_, err = h.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := rdb.PoolStats()
		o.ObserveInt64(count.Inst(), int64(s.IdleConns), idle)
		o.ObserveInt64(count.Inst(), int64(s.TotalConns)-int64(s.IdleConns), used)
		return nil
	}, count.Inst())
	return err
}
