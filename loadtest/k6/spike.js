// Spike: from quiet to ten times the average in seconds, and back.
import { journey, summary, thresholds } from './lib/journey.js';

export const options = {
  scenarios: {
    spike: {
      executor: 'ramping-arrival-rate',
      startRate: 5,
      timeUnit: '1s',
      preAllocatedVUs: 100,
      maxVUs: 600,
      stages: [
        { target: 5, duration: '30s' },
        { target: 200, duration: '10s' },
        { target: 200, duration: '1m' },
        { target: 5, duration: '10s' },
        { target: 5, duration: '1m' },
      ],
    },
  },
  thresholds,
};

export default function () {
  journey(30); // a spike may delay fulfilment: give polling longer
}

export const handleSummary = summary('spike');
