// The logic the k6 scenarios share, free of k6 imports so node's test runner
// can test it (loadtest/k6/test). k6 runs it as an ES module too.

const HEX = '0123456789abcdef';

function randomHex(bytes, random = Math.random) {
  let s = '';
  for (let i = 0; i < bytes * 2; i++) {
    s += HEX[Math.floor(random() * 16)];
  }
  return s;
}

// newTraceparent returns a W3C traceparent for a new, sampled trace whose root
// is this k6 request, and its trace ID, so a failed check names its trace.
export function newTraceparent(random = Math.random) {
  let traceId = randomHex(16, random);
  while (/^0+$/.test(traceId)) {
    traceId = randomHex(16, random); // all zeros is invalid
  }
  let spanId = randomHex(8, random);
  while (/^0+$/.test(spanId)) {
    spanId = randomHex(8, random);
  }
  return { header: `00-${traceId}-${spanId}-01`, traceId };
}

// traceIdFrom reads the trace ID out of a traceresponse (or traceparent) header.
export function traceIdFrom(header) {
  const m = /^00-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/.exec(header || '');
  return m ? m[1] : '';
}

export const TENANTS = ['acme', 'globex', 'initech', 'umbrella', 'hooli'];

// pickTenant picks one of TENANTS.
export function pickTenant(random = Math.random) {
  return TENANTS[Math.floor(random() * TENANTS.length)];
}

// idempotencyKey is unique per virtual user and iteration.
export function idempotencyKey(vu, iter, random = Math.random) {
  return `k6-${vu}-${iter}-${randomHex(4, random)}`;
}

// orderBody picks one to three distinct products (never the limited one,
// which runs out on purpose) and returns the JSON body of POST /api/orders.
export function orderBody(customerId, products, random = Math.random) {
  const choices = products.filter((p) => p.stock > 1000);
  if (choices.length === 0) {
    throw new Error('no product with stock to order');
  }
  const count = 1 + Math.floor(random() * Math.min(3, choices.length));
  const picked = [];
  while (picked.length < count) {
    const p = choices[Math.floor(random() * choices.length)];
    if (!picked.includes(p.sku)) {
      picked.push(p.sku);
    }
  }
  return JSON.stringify({
    customer_id: customerId,
    items: picked.map((sku) => ({ sku, quantity: 1 + Math.floor(random() * 3) })),
  });
}

// fulfilled reports whether a GET /api/orders/{id} answer is final.
export function settled(order) {
  return order && (order.status === 'fulfilled' || order.status === 'failed');
}

// summaryText renders the end-of-test summary k6 hands to handleSummary, in a
// few lines a person reads: requests, failures, and each step's p95/p99.
export function summaryText(data, scenario) {
  const m = data.metrics || {};
  const lines = [`ordertrace k6 · ${scenario}`];
  const reqs = m.http_reqs ? m.http_reqs.values.count : 0;
  const failed = m.http_req_failed ? m.http_req_failed.values.rate : 0;
  const checks = m.checks ? m.checks.values.rate : 0;
  lines.push(`  requests ${reqs}, failed ${(failed * 100).toFixed(2)}%, checks passed ${(checks * 100).toFixed(2)}%`);
  for (const [name, metric] of Object.entries(m).sort()) {
    const step = /^http_req_duration\{step:([a-z_]+)\}$/.exec(name);
    if (step && metric.values) {
      const v = metric.values;
      lines.push(`  ${step[1].padEnd(14)} p95 ${fmt(v['p(95)'])}  p99 ${fmt(v['p(99)'])}`);
    }
  }
  const crossed = Object.entries(m)
    .filter(([, metric]) => metric.thresholds && Object.values(metric.thresholds).some((t) => !t.ok))
    .map(([name]) => name);
  lines.push(crossed.length ? `  THRESHOLDS CROSSED: ${crossed.join(', ')}` : '  all thresholds held');
  return lines.join('\n') + '\n';
}

function fmt(ms) {
  return ms === undefined ? '   n/a' : `${ms.toFixed(1).padStart(7)} ms`;
}
