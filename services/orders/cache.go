package main

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/ordertrace/ordertrace/pkg/orderevents"
	"github.com/ordertrace/ordertrace/pkg/telemetry"
	"github.com/ordertrace/ordertrace/pkg/telemetry/instrumented"
	"github.com/redis/go-redis/v9"
)

// Cache keeps stock levels and prices in Redis in front of PostgreSQL
// (cache-aside). It is an optimisation only: when Redis fails, every lookup is
// a miss and the caller reads PostgreSQL.
type Cache struct {
	rdb    *redis.Client
	prefix string
	log    *slog.Logger
}

func openCache(redisURL, database string, tel *telemetry.Telemetry) (*Cache, error) {
	rdb, err := instrumented.Redis(redisURL, tel)
	if err != nil {
		return nil, err
	}
	return &Cache{rdb: rdb, prefix: database, log: tel.Logger}, nil
}

// Close closes the client.
func (c *Cache) Close() error { return c.rdb.Close() }

// get returns the cached values among skus and the SKUs it has not got.
func (c *Cache) get(ctx context.Context, kind string, skus []string) (map[string]int64, []string) {
	keys := make([]string, len(skus))
	for i, sku := range skus {
		keys[i] = orderevents.CacheKey(c.prefix, kind, sku)
	}
	values, err := c.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		c.log.WarnContext(ctx, "cache read failed; reading the database", "kind", kind, "error", err)
		return map[string]int64{}, skus
	}
	hits := make(map[string]int64, len(skus))
	var misses []string
	for i, v := range values {
		s, _ := v.(string)
		n, err := strconv.ParseInt(s, 10, 64)
		if v == nil || err != nil {
			misses = append(misses, skus[i])
			continue
		}
		hits[skus[i]] = n
	}
	return hits, misses
}

// set caches values for ttl, in one round trip.
func (c *Cache) set(ctx context.Context, kind string, values map[string]int64, ttl time.Duration) {
	if len(values) == 0 {
		return
	}
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for sku, v := range values {
			p.Set(ctx, orderevents.CacheKey(c.prefix, kind, sku), v, ttl)
		}
		return nil
	})
	if err != nil {
		c.log.WarnContext(ctx, "cache write failed", "kind", kind, "error", err)
	}
}
