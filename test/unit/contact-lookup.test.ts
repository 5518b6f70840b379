import { describe, expect, it } from 'vitest';
import { IntercomContactLookup, type ContactRef } from '../../src/engine/delivery/contact-lookup.js';

function fakeResolver() {
  const calls: string[][] = [];
  let fail: Error | undefined;
  const resolve = async (emails: string[]) => {
    calls.push(emails);
    if (fail) throw fail;
    return new Map<string, ContactRef | Error>(emails.map((e) => [e, e.startsWith('missing') ? new Error(`not found: ${e}`) : { id: `id-${e}`, role: 'user' as const }]));
  };
  return { calls, resolve, setFail: (e?: Error) => (fail = e) };
}

describe('Intercom contact lookup', () => {
  it('prefetched emails are searched together, and each lookup reuses the answer (normalised)', async () => {
    const r = fakeResolver();
    const lookup = new IntercomContactLookup(r.resolve);
    lookup.prefetch(['a@x.test', 'B@x.test', 'a@x.test']);
    expect(await lookup.lookup(' b@X.test ')).toEqual({ id: 'id-b@x.test', role: 'user' });
    expect(await lookup.lookup('a@x.test')).toEqual({ id: 'id-a@x.test', role: 'user' });
    expect(r.calls).toEqual([['a@x.test', 'b@x.test']]);
  });

  it('a large claim is searched a page of addresses at a time, each page settling its own rows', async () => {
    const r = fakeResolver();
    const lookup = new IntercomContactLookup(r.resolve);
    const emails = Array.from({ length: 120 }, (_, i) => `p${i}@x.test`);
    lookup.prefetch(emails);
    await Promise.all(emails.map((e) => lookup.lookup(e)));
    expect(r.calls.map((c) => c.length)).toEqual([50, 50, 20]);
  });

  it('lookups made in the same turn share one search', async () => {
    const r = fakeResolver();
    const lookup = new IntercomContactLookup(r.resolve);
    const all = await Promise.all(['c@x.test', 'd@x.test', 'e@x.test'].map((e) => lookup.lookup(e)));
    expect(all.map((c) => c.id)).toEqual(['id-c@x.test', 'id-d@x.test', 'id-e@x.test']);
    expect(r.calls).toHaveLength(1);
  });

  it('a failed search is not remembered: the next lookup searches again', async () => {
    const r = fakeResolver();
    const lookup = new IntercomContactLookup(r.resolve);
    r.setFail(new Error('rate limited'));
    await expect(lookup.lookup('f@x.test')).rejects.toThrow('rate limited');
    r.setFail(undefined);
    expect((await lookup.lookup('f@x.test')).id).toBe('id-f@x.test');
    expect(r.calls).toHaveLength(2);
  });

  it('"not found" is kept only briefly, a found contact longer, and the number kept is bounded', async () => {
    let now = 0;
    const r = fakeResolver();
    const lookup = new IntercomContactLookup(r.resolve, { ttlMs: 60_000, negativeTtlMs: 1_000, maxEntries: 3, now: () => now });
    await expect(lookup.lookup('missing@x.test')).rejects.toThrow('not found');
    await lookup.lookup('g@x.test');
    now = 2_000;
    await expect(lookup.lookup('missing@x.test')).rejects.toThrow('not found');
    await lookup.lookup('g@x.test');
    expect(r.calls).toHaveLength(3); // missing searched twice, g once
    for (const e of ['h@x.test', 'i@x.test', 'j@x.test']) await lookup.lookup(e);
    expect(lookup.size).toBe(3);
  });
});
