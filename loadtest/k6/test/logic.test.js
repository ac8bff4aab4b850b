// Unit tests of the k6 scenarios' shared logic: node --test loadtest/k6/test/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';
import {
  TENANTS, idempotencyKey, newTraceparent, orderBody, pickTenant, settled, summaryText, traceIdFrom,
} from '../lib/logic.js';

const products = [
  { sku: 'COFFEE-BEANS-1KG', stock: 1000000 },
  { sku: 'MUG-CERAMIC', stock: 1000000 },
  { sku: 'GRINDER-BURR', stock: 1000000 },
  { sku: 'LIMITED-ROAST', stock: 5 },
];

// A seeded generator, so failures reproduce.
function seeded(seed) {
  let s = seed;
  return () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return s / 2147483648;
  };
}

test('traceparent is W3C, sampled, and unique', () => {
  const seen = new Set();
  for (let i = 0; i < 1000; i++) {
    const { header, traceId } = newTraceparent();
    assert.match(header, /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    assert.equal(traceIdFrom(header), traceId);
    assert.notEqual(traceId, '0'.repeat(32));
    seen.add(traceId);
  }
  assert.equal(seen.size, 1000);
});

test('an all-zero draw is never used', () => {
  let calls = 0;
  const zeroThenSeeded = () => (calls++ < 32 ? 0 : 0.5);
  const { traceId } = newTraceparent(zeroThenSeeded);
  assert.notEqual(traceId, '0'.repeat(32));
});

test('traceIdFrom refuses what is not a traceparent', () => {
  for (const bad of ['', undefined, '00-xyz', '01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01']) {
    assert.equal(traceIdFrom(bad), '');
  }
});

test('tenants come from the list, all of them', () => {
  const random = seeded(7);
  const seen = new Set();
  for (let i = 0; i < 500; i++) {
    const t = pickTenant(random);
    assert.ok(TENANTS.includes(t));
    seen.add(t);
  }
  assert.equal(seen.size, TENANTS.length);
});

test('idempotency keys differ per user and iteration and fit the API', () => {
  const a = idempotencyKey(1, 1);
  assert.notEqual(a, idempotencyKey(1, 2));
  assert.notEqual(a, idempotencyKey(2, 1));
  assert.match(a, /^[!-~]{1,255}$/);
});

test('an order has 1 to 3 distinct in-stock products, quantities 1 to 3', () => {
  const random = seeded(42);
  for (let i = 0; i < 500; i++) {
    const body = JSON.parse(orderBody('k6-1', products, random));
    assert.equal(body.customer_id, 'k6-1');
    assert.ok(body.items.length >= 1 && body.items.length <= 3);
    const skus = body.items.map((it) => it.sku);
    assert.equal(new Set(skus).size, skus.length, 'no sku twice');
    assert.ok(!skus.includes('LIMITED-ROAST'), 'never the product that runs out');
    for (const it of body.items) {
      assert.ok(Number.isInteger(it.quantity) && it.quantity >= 1 && it.quantity <= 3);
    }
  }
  assert.throws(() => orderBody('c', [{ sku: 'X', stock: 0 }]), /no product/);
});

test('settled means fulfilled or failed', () => {
  assert.equal(settled({ status: 'pending' }), false);
  assert.equal(settled({ status: 'fulfilled' }), true);
  assert.equal(settled({ status: 'failed' }), true);
  assert.equal(settled(undefined), undefined);
});

test('the summary names steps, failures and crossed thresholds', () => {
  const text = summaryText({
    metrics: {
      http_reqs: { values: { count: 120 } },
      http_req_failed: { values: { rate: 0.025 } },
      checks: { values: { rate: 0.97 } },
      'http_req_duration{step:place_order}': { values: { 'p(95)': 412.3, 'p(99)': 987.6 }, thresholds: { 'p(95)<500': { ok: true } } },
      http_req_failed_x: { values: {}, thresholds: { 'rate<0.01': { ok: false } } },
    },
  }, 'average');
  assert.match(text, /requests 120, failed 2\.50%, checks passed 97\.00%/);
  assert.match(text, /place_order +p95 +412\.3 ms +p99 +987\.6 ms/);
  assert.match(text, /THRESHOLDS CROSSED: http_req_failed_x/);
});

test('every scenario script parses as an ES module and uses the shared journey', () => {
  const dir = fileURLToPath(new URL('..', import.meta.url));
  const scripts = readdirSync(dir).filter((f) => f.endsWith('.js'));
  assert.deepEqual(scripts.sort(), ['average.js', 'smoke.js', 'soak.js', 'spike.js', 'stress.js']);
  for (const f of scripts) {
    execFileSync(process.execPath, ['--check', f], { cwd: dir }); // throws on a syntax error
    const src = readFileSync(dir + f, 'utf8');
    assert.match(src, /from '\.\/lib\/journey\.js'/, `${f} uses the shared journey`);
    assert.match(src, /export const handleSummary = summary\('/, `${f} writes its summary`);
  }
});
