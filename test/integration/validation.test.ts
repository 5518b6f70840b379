import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { STEP_HTML_MAX_CHARS } from '../../src/engine/automations/definition.js';
import { MAX_TEMPLATE_CHARS } from '../../src/engine/templating.js';
import { startInMemory, tempDataDir, testEnv, type InMemoryHarness } from '../helpers/mcp.js';

/** The roster's field rules, as every tool that takes the field applies them (the CSV import: csv-import.test.ts). */
describe('field validation', () => {
  const data = tempDataDir();
  let h: InMemoryHarness;
  beforeAll(async () => {
    h = await startInMemory(testEnv({ SENDGRID_API_KEY: 'sg-test-key-123456', SENDGRID_FROM_EMAIL: 'success@ourco.test', INTERCOM_ACCESS_TOKEN: 'ic-test-token-123456' }, data.dir));
  });
  afterAll(async () => {
    await h.close();
    data.cleanup();
  });

  const problems = async (tool: string, args: Record<string, unknown>) => {
    const r = await h.call(tool, args);
    expect(r.structuredContent.success, JSON.stringify(r.structuredContent).slice(0, 300)).toBe(false);
    expect(r.structuredContent.error.code).toBe('invalid_input');
    return r.structuredContent.error.details.fields as Array<{ field: string; problem: string }>;
  };

  it('renewal_date must be a real calendar date between 1900 and 2200', async () => {
    expect(await problems('register_client', { client_id: 'feb-co', name: 'Feb', renewal_date: '2024-02-30' })).toEqual([
      { field: 'renewal_date', problem: 'not a date in the calendar (check the month and day)' },
    ]);
    expect(await problems('register_client', { client_id: 'zero-co', name: 'Zero', renewal_date: '0000-01-01' })).toEqual([{ field: 'renewal_date', problem: 'a year between 1900 and 2200' }]);
    expect(await problems('update_client_info', { client_id: 'x-co', renewal_date: '2201-01-01' })).toEqual([{ field: 'renewal_date', problem: 'a year between 1900 and 2200' }]);
    expect((await h.call('register_client', { client_id: 'leap-co', name: 'Leap', renewal_date: '2024-02-29' })).structuredContent.success).toBe(true);
  });

  it('custom attributes are bounded (count, name, value, total) and reserved names are refused by name', async () => {
    expect(await problems('register_client', { client_id: 'big-co', name: 'Big', custom_attributes: { notes: 'x'.repeat(1_000_000) } })).toEqual([
      { field: 'custom_attributes', problem: 'custom attributes are at most 32768 bytes as JSON in total (got 1000012)' },
    ]);
    const many = Object.fromEntries(Array.from({ length: 20_000 }, (_, i) => [`k${i}`, i]));
    expect(await problems('register_client', { client_id: 'many-co', name: 'Many', custom_attributes: many })).toEqual([
      { field: 'custom_attributes', problem: 'at most 100 custom attributes (got 20000)' },
    ]);
    expect(await problems('register_client', { client_id: 'val-co', name: 'Val', custom_attributes: { notes: 'x'.repeat(2001) } })).toEqual([
      { field: 'custom_attributes.notes', problem: 'an attribute value is at most 2000 characters' },
    ]);
    expect(await problems('register_client', { client_id: 'key-co', name: 'Key', custom_attributes: { ['k'.repeat(101)]: 1 } })).toEqual([
      { field: `custom_attributes.${'k'.repeat(101)}`, problem: 'an attribute name is 1 to 100 characters (got 101)' },
    ]);
    // "__proto__" would be dropped silently by any object built from it: refused before, by name.
    const proto = JSON.parse('{"client_id":"proto-co","name":"Proto","custom_attributes":{"__proto__":{"admin":true},"plan":"gold"}}');
    expect(await problems('register_client', proto)).toEqual([{ field: 'custom_attributes.__proto__', problem: 'a key named "__proto__" cannot be stored; rename it' }]);
    for (const key of ['constructor', 'prototype']) {
      expect(await problems('update_client_info', { client_id: 'leap-co', custom_attributes: { [key]: 'x' } })).toEqual([
        { field: `custom_attributes.${key}`, problem: `"${key}" cannot be an attribute name (reserved); rename it` },
      ]);
    }
  });

  it('template fields have one limit: a body_html up to its schema maximum is a template, one over it is refused naming that maximum', async () => {
    await h.call('register_client', { client_id: 'tpl-co', name: 'Tpl', tier: 'enterprise' });
    await h.call('upsert_contact', { client_id: 'tpl-co', email: 'ann@tpl.example', first_name: 'Ann' });
    const html = (chars: number) => {
      const head = '<p>Hi {{ contact.first_name | fallback: "there" }}</p>';
      return head + '<p>x</p>'.repeat(Math.ceil((chars - head.length) / 8)).slice(0, chars - head.length);
    };
    const campaign = { campaign_name: 'Big body', template_type: 'custom', subject_line: 'Hello', body_text: 'Hi', target_client_ids: ['tpl-co'] };
    for (const chars of [150_000, MAX_TEMPLATE_CHARS]) {
      const r = await h.call('send_personalized_email', { ...campaign, body_html: html(chars) });
      expect(r.structuredContent, `${chars}: ${JSON.stringify(r.structuredContent).slice(0, 400)}`).toMatchObject({ success: true, phase: 'preview' });
    }
    expect(await problems('send_personalized_email', { ...campaign, body_html: html(MAX_TEMPLATE_CHARS + 1) })).toEqual([
      { field: 'body_html', problem: `a template is at most ${MAX_TEMPLATE_CHARS} characters` },
    ]);
    // Automations' email steps: their own maximum (a workflow carries up to 30 steps), stated the same way.
    const step = { type: 'send_email', subject: 'Hello', body: 'Hi' };
    const workflow = { workflow_name: 'Big body', trigger_type: 'event_based', trigger_conditions: { event: 'big_body' } };
    const ok = await h.call('automate_communications', { ...workflow, actions: [{ ...step, body_html: html(STEP_HTML_MAX_CHARS) }] });
    expect(ok.structuredContent, JSON.stringify(ok.structuredContent).slice(0, 400)).toMatchObject({ success: true, phase: 'preview' });
    expect(await problems('automate_communications', { ...workflow, actions: [{ ...step, body_html: html(STEP_HTML_MAX_CHARS + 1) }] })).toEqual([
      { field: 'actions.0.body_html', problem: `a template is at most ${STEP_HTML_MAX_CHARS} characters` },
    ]);
  });

  it('email addresses follow RFC 5321 lengths wherever an address is taken', async () => {
    const longLocal = `${'a'.repeat(65)}@acme.example`;
    const tooLong = `${'a'.repeat(60)}@${'b'.repeat(250)}.example`;
    expect(await problems('register_client', { client_id: 'mail-co', name: 'Mail', owner_email: tooLong })).toEqual([
      { field: 'owner_email', problem: 'an email address is at most 254 characters (RFC 5321)' },
    ]);
    expect(await problems('upsert_contact', { client_id: 'leap-co', email: longLocal })).toEqual([{ field: 'email', problem: 'the part before "@" is at most 64 characters (RFC 5321)' }]);
    expect((await problems('sendgrid_send_email', { to: tooLong, subject: 'Hi', text: 'Hi' })).map((p) => p.field)).toContain('to');
    expect((await problems('sendgrid_send_email', { to: [longLocal], subject: 'Hi', text: 'Hi' })).map((p) => p.field)).toContain('to');
    expect((await problems('intercom_get_user', { user_email: longLocal })).map((p) => p.field)).toEqual(['user_email']);
  });
});
