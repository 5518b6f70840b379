import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { BudgetPeers } from '../../src/resilience/budget-peers.js';
import { openStore, type Store } from '../../src/store/index.js';
import { availableDialects, createTarget, type DatabaseTarget } from '../helpers/databases.js';
import { testEnv } from '../helpers/mcp.js';
import { until } from '../helpers/until.js';

/** Processes on one database that send with the same account find each other, and only those. */
const dialects = await availableDialects();

describe.each(dialects)('rate budget peers on %s', (dialect) => {
  let target: DatabaseTarget;
  const stores: Store[] = [];
  const log = createLogger('silent');
  beforeAll(async () => {
    target = await createTarget(dialect);
    for (let i = 0; i < 3; i++) stores.push(await openStore(loadConfig(testEnv(target.env) as NodeJS.ProcessEnv), log));
  });
  afterAll(async () => {
    for (const s of stores) await s.close();
    await target.cleanup();
  });

  it('counts the processes sending with one account; another account is not counted; a clean stop leaves at once', async () => {
    const key = BudgetPeers.key('sendgrid', 'SG.one');
    const a = new BudgetPeers(stores[0]!.db, key, log);
    const b = new BudgetPeers(stores[1]!.db, key, log);
    const other = new BudgetPeers(stores[2]!.db, BudgetPeers.key('sendgrid', 'SG.two'), log);
    const touchAll = () => [a, b, other].forEach((p) => p.touch());
    await until(
      () => {
        touchAll();
        return [a.count(), b.count(), other.count()];
      },
      (n) => n[0] === 2 && n[1] === 2,
      { timeoutMs: 5_000, intervalMs: 100 },
    );
    expect(other.count()).toBe(1);
    await b.close();
    await until(
      () => {
        a.touch();
        return a.count();
      },
      (n) => n === 1,
      { timeoutMs: 5_000, intervalMs: 100 },
    );
    await a.close();
    await other.close();
  });
});
