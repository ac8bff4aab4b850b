// Average load: a steady arrival rate (an open model: new journeys start on
// schedule whatever the suite's latency), as on an ordinary day.
import { journey, summary, thresholds } from './lib/journey.js';

export const options = {
  scenarios: {
    average: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE || 20), // journeys per second
      timeUnit: '1s',
      duration: __ENV.DURATION || '5m',
      preAllocatedVUs: 50,
      maxVUs: 200,
    },
  },
  thresholds,
};

export default function () {
  journey();
}

export const handleSummary = summary('average');
