// Package catalogcache is the Redis key scheme of the catalogue cache: orders
// caches stock levels and prices under these keys, and fulfillment writes the
// new stock level of what it ships through to them.
package catalogcache

import "time"

// Key is the Redis key under which orders caches a value of kind ("stock" or
// "price") for sku. Keys are namespaced by the PostgreSQL database, so stacks
// (or test databases) that share a Redis never mix; fulfillment writes the
// new stock level of what it ships.
func Key(database, kind, sku string) string {
	return "ordertrace:" + database + ":" + kind + ":" + sku
}

// StockTTL bounds how long a cached stock level lives: short, because only
// orders' advisory check reads it, and a lost write must not linger.
const StockTTL = 5 * time.Second
