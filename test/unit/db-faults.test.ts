import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { dbFaults } from '../helpers/db-faults.js';

describe('the database-fault helper the exactly-once drills use', () => {
  const faults = dbFaults();
  afterAll(() => faults.cleanup());

  it('fails the chosen statements, the chosen number of times, and heals', async () => {
    await faults.installInProcess();
    const db = new Database(':memory:');
    db.prepare('create table t (x int)').run();
    faults.fail(/insert into t/, 2);
    const insert = db.prepare('insert into t values (1)');
    expect(() => insert.run()).toThrow(/injected database fault/);
    expect(() => db.prepare('insert into t values (2)').run()).toThrow(/injected/);
    db.prepare('insert into t values (3)').run();
    expect(db.prepare('select count(*) as n from t').get()).toEqual({ n: 1 });
    faults.fail('select');
    expect(() => db.prepare('select 1').get()).toThrow();
    faults.clear();
    expect(db.prepare('select 1 as one').get()).toEqual({ one: 1 });
    expect(faults.hits()).toHaveLength(3);
    db.close();
  });
});
