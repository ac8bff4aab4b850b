// Smoke: one user, a few journeys. Does the suite work at all?
import { journey, summary, thresholds } from './lib/journey.js';

export const options = {
  scenarios: { smoke: { executor: 'shared-iterations', vus: 1, iterations: 5, maxDuration: '1m' } },
  thresholds,
};

export default function () {
  journey();
}

export const handleSummary = summary('smoke');
