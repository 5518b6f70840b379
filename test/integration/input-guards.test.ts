import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { availableDialects, createTarget, type DatabaseTarget } from '../helpers/databases.js';
import { startInMemory, testEnv, type InMemoryHarness } from '../helpers/mcp.js';

const dialects = await availableDialects();
const cursor = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

/** Bad input that reaches the database must be invalid_input on both stores — never "This is a bug". */
describe.each(dialects)('input guards on %s', (dialect) => {
  let target: DatabaseTarget;
  let h: InMemoryHarness;
  beforeAll(async () => {
    target = await createTarget(dialect);
    h = await startInMemory(testEnv(target.env));
    for (const [id, health] of [['acme-co', 40], ['bolt-co', 60], ['coral-co', 80]] as const) {
      await h.call('register_client', { client_id: id, name: id, health_score: health });
    }
  });
  afterAll(async () => {
    await h?.close();
    await target?.cleanup();
  });

  const expectInvalid = (r: { structuredContent: Record<string, any> }, field?: string) => {
    expect(r.structuredContent.success, JSON.stringify(r.structuredContent)).toBe(false);
    expect(r.structuredContent.error.code).toBe('invalid_input');
    expect(r.structuredContent.error.message).not.toMatch(/This is a bug/);
    if (field) expect(r.structuredContent.error.details.fields.map((f: { field: string }) => f.field)).toContain(field);
  };

  it('a NUL character in any string argument is invalid_input naming the field', async () => {
    expectInvalid(await h.call('register_client', { client_id: 'nul-co', name: 'Nul\u0000Co' }), 'name');
    expectInvalid(await h.call('list_clients', { search: 'ac\u0000me' }), 'search');
    expectInvalid(await h.call('upsert_contact', { client_id: 'acme-co', email: 'a@acme.test', name: 'A\u0000' }), 'name');
    expectInvalid(await h.call('update_client_info', { client_id: 'acme-co', custom_attributes: { 'k\u0000': 'v' } }), 'custom_attributes.k\u0000');
    expectInvalid(await h.call('get_client_timeline', { client_id: 'acme-co', types: ['note\u0000'] }), 'types[0]');
    expect((await h.call('list_clients', {})).structuredContent.total).toBe(3);
  });

  it('arguments nested thousands of levels deep are invalid_input naming where, never "This is a bug"', async () => {
    for (const depth of [65, 5_000, 100_000]) {
      let obj: unknown = 1;
      let arr: unknown = 1;
      for (let i = 0; i < depth; i++) {
        obj = { a: obj };
        arr = [arr];
      }
      for (const [tool, args, field] of [
        ['register_client', { client_id: 'deep-co', name: 'Deep', custom_attributes: { p: arr } }, 'custom_attributes.p'],
        ['list_clients', { search: arr }, 'search'],
        ['update_client_info', { client_id: 'acme-co', custom_attributes: { p: obj } }, 'custom_attributes.p'],
        ['record_customer_event', { event: 'deep', client_id: 'acme-co', properties: { p: obj } }, 'properties.p'],
      ] as const) {
        const r = await h.call(tool, args as Record<string, unknown>);
        expectInvalid(r);
        expect(r.structuredContent.error.message, `${tool} at ${depth}`).toMatch(/nested more than 64 levels deep/);
        expect(r.structuredContent.error.details.fields[0].field.startsWith(field), r.structuredContent.error.details.fields[0].field).toBe(true);
      }
    }
    // 64 levels is within the limit: refused (if at all) by the field's own rules, not by the depth.
    let ok: unknown = 'x';
    for (let i = 0; i < 62; i++) ok = { a: ok };
    const within = await h.call('record_customer_event', { event: 'deep', client_id: 'acme-co', properties: { p: ok } });
    expect(within.structuredContent.error?.message ?? '').not.toMatch(/nested more than/);
  });

  it('an unknown argument is refused in every tool, naming the nearest valid field; nothing is done', async () => {
    // The attack: an "email" the tool does not know, dropped silently, made the event the whole client's.
    const r = await h.call('record_customer_event', { event: 'meeting_booked', client_id: 'acme-co', email: 'ann@acme-co.example' });
    expectInvalid(r, 'email');
    expect(r.structuredContent.error.message).toContain('unknown field `email`; did you mean `contact_email`?');
    expect((await h.call('list_customer_events', { client_id: 'acme-co' })).structuredContent.events).toEqual([]);
    // Nested objects of fixed shape too, and keys with no near match are named without a guess.
    const nested = await h.call('automate_communications', {
      workflow_name: 'Nested',
      trigger_type: 'event_based',
      trigger_conditions: { event: 'x' },
      actions: [{ type: 'send_email', subject: 'Hi', body: 'Hi', bcc: 'spy@evil.example' }],
      send_window: { days: ['mon'], start_hour: 9, end_hour: 17, time_zone: 'UTC' },
    });
    expectInvalid(nested);
    const fields = nested.structuredContent.error.details.fields;
    expect(fields.find((f: { field: string }) => f.field.endsWith('bcc'))?.problem).toBe('unknown field `bcc`');
    expect(fields.find((f: { field: string }) => f.field === 'send_window.time_zone')?.problem).toBe('unknown field `time_zone`; did you mean `timezone`?');
    for (const [tool, args, wrong, meant] of [
      ['list_clients', { serach: 'acme' }, 'serach', 'search'],
      ['register_client', { client_id: 'typo-co', name: 'Typo', healthscore: 50 }, 'healthscore', 'health_score'],
      ['update_client_info', { client_id: 'acme-co', Tier: 'enterprise' }, 'Tier', 'tier'],
      ['upsert_contact', { client_id: 'acme-co', email: 'x@acme-co.example', firstname: 'X' }, 'firstname', 'first_name'],
      ['integrations_status', { verbose: true }, 'verbose', undefined],
    ] as const) {
      const refused = await h.call(tool, args);
      expectInvalid(refused, wrong);
      expect(refused.structuredContent.error.message).toContain(meant ? `unknown field \`${wrong}\`; did you mean \`${meant}\`?` : `unknown field \`${wrong}\``);
    }
    expect((await h.call('get_client_overview', { client_id: 'typo-co' })).structuredContent.error.code).toBe('not_found');
  });

  it('the store itself refuses NUL in any query parameter (whatever path a value took)', async () => {
    await expect(h.services.store.roster.getClient('acme\u0000co')).rejects.toMatchObject({ code: 'invalid_input' });
    await expect(h.services.store.timeline.list({ client_id: 'x\u0000' }, 5)).rejects.toMatchObject({ code: 'invalid_input' });
  });

  it('a crafted list_clients cursor is invalid_input, whatever its content', async () => {
    const first = await h.call('list_clients', { sort_by: 'health_score', limit: 1 });
    expect(first.structuredContent.next_cursor).toBeTruthy();
    expect((await h.call('list_clients', { sort_by: 'health_score', limit: 1, cursor: first.structuredContent.next_cursor })).structuredContent.success).toBe(true);
    for (const [sort_by, c] of [
      ['health_score', cursor(['health_score', 'asc', { $gt: 1 }, 'acme-co'])],
      ['health_score', cursor(['health_score', 'asc', 'forty', 'acme-co'])],
      ['health_score', cursor(['health_score', 'asc', [1], 'acme-co'])],
      ['name', cursor(['name', 'asc', 5, 'acme-co'])],
      ['name', cursor(['name', 'asc', 'acme', { id: 1 }])],
      ['name', cursor(['name', 'asc', 'acme', 'acme\u0000'])],
      ['name', cursor(['name', 'asc', null, 'acme-co'])],
      ['name', cursor({ field: 'name' })],
      ['name', 'not base64 at all!'],
      ['name', cursor(['name', 'asc'])],
    ] as const) {
      expectInvalid(await h.call('list_clients', { sort_by, cursor: c }));
    }
  });

  it('a crafted timeline cursor is invalid_input', async () => {
    for (const c of ['1e300', '99999999999999999999', '-1', '1.5', 'abc', '0x10', ' 12']) {
      expectInvalid(await h.call('get_client_timeline', { client_id: 'acme-co', cursor: c }));
    }
  });

  it('a crafted list_campaigns cursor is invalid_input', async () => {
    for (const c of [cursor([{ a: 1 }, 'x']), cursor(['2024-01-01T00:00:00Z', 5]), cursor(['2024\u0000', 'x']), cursor('x'), 'garbage!!']) {
      expectInvalid(await h.call('list_campaigns', { cursor: c }));
    }
  });
});
