// Soak: the average rate for hours, to find what only time shows (leaks,
// growing queues, a table that slows down as it fills).
import { journey, summary, thresholds } from './lib/journey.js';

export const options = {
  scenarios: {
    soak: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE || 20),
      timeUnit: '1s',
      duration: __ENV.DURATION || '2h',
      preAllocatedVUs: 50,
      maxVUs: 200,
    },
  },
  thresholds,
};

export default function () {
  journey();
}

export const handleSummary = summary('soak');
