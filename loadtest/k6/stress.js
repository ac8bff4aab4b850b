// Stress: the arrival rate climbs well past the average, to find where the
// suite bends (latency) and where it breaks (errors).
import { journey, summary, thresholds } from './lib/journey.js';

export const options = {
  scenarios: {
    stress: {
      executor: 'ramping-arrival-rate',
      startRate: 10,
      timeUnit: '1s',
      preAllocatedVUs: 100,
      maxVUs: 500,
      stages: [
        { target: 50, duration: '2m' },
        { target: 100, duration: '3m' },
        { target: 150, duration: '3m' },
        { target: 0, duration: '1m' },
      ],
    },
  },
  thresholds,
};

export default function () {
  journey();
}

export const handleSummary = summary('stress');
