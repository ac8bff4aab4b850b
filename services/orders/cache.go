package main

import (
	"context"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/ordertrace/ordertrace/pkg/catalogcache"
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

	// After a failure the cache is skipped for a while, so a Redis that is
	// down costs one timeout, not one per lookup.
	skipUntil atomic.Int64 // unix nanoseconds
}

// cacheClient fails fast: when Redis is slow or gone, reading PostgreSQL is
// quicker than waiting out go-redis's default 5 s dial and 3 s reads, and a
// miss is cheaper than retrying a dead Redis. A REDIS_URL may set its own.
var cacheClient = instrumented.RedisOptions{
	DialTimeout: time.Second, ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond, MaxRetries: -1,
}

// cacheBreak is how long the cache is skipped after Redis failed.
const cacheBreak = 5 * time.Second

func (c *Cache) skipping() bool { return time.Now().UnixNano() < c.skipUntil.Load() }

func (c *Cache) broken(ctx context.Context, what string, err error) {
	c.skipUntil.Store(time.Now().Add(cacheBreak).UnixNano())
	c.log.WarnContext(ctx, "cache "+what+" failed; reading the database for a while", "error", err, "skip_for", cacheBreak.String())
}

func openCache(redisURL, database string, tel *telemetry.Telemetry) (*Cache, error) {
	rdb, err := instrumented.Redis(redisURL, tel, cacheClient)
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
		keys[i] = catalogcache.Key(c.prefix, kind, sku)
	}
	if c.skipping() {
		return map[string]int64{}, skus
	}
	values, err := c.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		c.broken(ctx, "read", err)
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
	if len(values) == 0 || c.skipping() {
		return
	}
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for sku, v := range values {
			p.Set(ctx, catalogcache.Key(c.prefix, kind, sku), v, ttl)
		}
		return nil
	})
	if err != nil {
		c.broken(ctx, "write", err)
	}
}
