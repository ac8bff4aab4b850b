// The order journey every scenario runs: list the products, place an order
// (random tenant, Idempotency-Key, a fresh traceparent so k6 is the root of
// the suite's trace), then poll until fulfilment. Each step is tagged, so its
// thresholds are separate; a failed check logs the trace ID to open.
import http from 'k6/http';
import { check, sleep } from 'k6';
import { Counter } from 'k6/metrics';
import { idempotencyKey, newTraceparent, orderBody, pickTenant, settled, summaryText, traceIdFrom } from './logic.js';

const BASE_URL = __ENV.BASE_URL || 'http://localhost:8080';
const failedTraces = new Counter('ordertrace_failed_checks');

// thresholds every scenario shares: the run fails when one is crossed.
export const thresholds = {
  http_req_failed: ['rate<0.01'],
  checks: ['rate>0.99'],
  'http_req_duration{step:list_products}': ['p(95)<300', 'p(99)<800'],
  'http_req_duration{step:place_order}': ['p(95)<500', 'p(99)<1000'],
  'http_req_duration{step:poll_order}': ['p(95)<300', 'p(99)<800'],
};

function traced(step) {
  const tp = newTraceparent();
  return { traceId: tp.traceId, params: { headers: { traceparent: tp.header }, tags: { step } } };
}

function expect(res, step, traceId, checks) {
  const ok = check(res, checks, { step });
  if (!ok) {
    failedTraces.add(1, { step });
    const id = traceIdFrom(res.headers.Traceresponse) || traceId;
    console.error(`check failed at ${step}: status ${res.status}, trace_id=${id}`);
  }
  return ok;
}

export function journey(pollTimeoutSeconds = 10) {
  let t = traced('list_products');
  const list = http.get(`${BASE_URL}/api/products`, t.params);
  if (!expect(list, 'list_products', t.traceId, {
    'products: 200': (r) => r.status === 200,
    'products: a catalogue': (r) => Array.isArray(r.json()) && r.json().length > 0,
  })) {
    return;
  }

  t = traced('place_order');
  t.params.headers['Content-Type'] = 'application/json';
  t.params.headers['X-Tenant-ID'] = pickTenant();
  t.params.headers['Idempotency-Key'] = idempotencyKey(__VU, __ITER);
  const body = orderBody(`k6-${__VU}`, list.json());
  const placed = http.post(`${BASE_URL}/api/orders`, body, t.params);
  if (!expect(placed, 'place_order', t.traceId, {
    'order: 201': (r) => r.status === 201,
    'order: pending with a trace': (r) => r.json('status') === 'pending' && r.json('trace_id') === t.traceId,
  })) {
    return;
  }

  const orderId = placed.json('order_id');
  const deadline = Date.now() + pollTimeoutSeconds * 1000;
  let order;
  do {
    sleep(0.2);
    const p = traced('poll_order');
    const res = http.get(`${BASE_URL}/api/orders/${orderId}`, p.params);
    if (!expect(res, 'poll_order', p.traceId, { 'poll: 200': (r) => r.status === 200 })) {
      return;
    }
    order = res.json();
  } while (!settled(order) && Date.now() < deadline);
  expect({ status: 200, headers: {} }, 'fulfilment', t.traceId, { 'order: fulfilled in time': () => settled(order) });
}

// summary writes the JSON summary for the run and a short text on stdout.
export function summary(scenario) {
  return (data) => ({
    stdout: summaryText(data, scenario),
    [`${__ENV.RESULTS_DIR || '.'}/summary-${scenario}.json`]: JSON.stringify(data, null, 2),
  });
}
