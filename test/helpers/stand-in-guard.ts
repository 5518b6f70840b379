import { afterAll, afterEach } from 'vitest';
import { describeViolations, liveStandIns } from '../stand-ins/http-stand-in.js';

/**
 * Loaded before every test file (vitest.config.ts setupFiles): after each test, any contract
 * violation a provider stand-in recorded during it fails that test, naming the request and the rule
 * it broke. It does not depend on the test file's own hooks or on the order of its tests; stopping a
 * stand-in with unreported violations throws as well (HttpStandIn.stop), for scripts outside vitest.
 */
export function failOnViolations(): void {
  const found = [...liveStandIns].map((s) => ({ name: s.name, violations: s.takeUnreportedViolations() })).filter((s) => s.violations.length);
  if (found.length) throw new Error(found.map((s) => describeViolations(s.name, s.violations)).join('\n'));
}

afterEach(failOnViolations);
afterAll(failOnViolations);
