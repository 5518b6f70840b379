import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import { afterEach, describe, expect, it } from 'vitest';
import { standInEnv, startInMemory, tempDataDir, testEnv, type InMemoryHarness } from '../helpers/mcp.js';
import { startSendGridStandIn } from '../stand-ins/sendgrid.js';

/**
 * Roles and actors inside the server, below the HTTP layer: every message carries the AuthInfo that
 * HTTP sign-in would attach (the token's scopes and person), as the in-memory transport allows. The HTTP
 * answers themselves (401, 403 step-up) are in http-signin.test.ts.
 */

function signedIn(subject: string, scopes: string[], who: { name?: string; email?: string } = {}): AuthInfo {
  return { token: 'not-used-here', clientId: subject, scopes, expiresAt: Math.floor(Date.now() / 1000) + 600, extra: { who: { subject, ...who } } };
}

describe('roles and actors with sign-in (the adapter)', () => {
  const data = tempDataDir();
  let h: InMemoryHarness | undefined;
  afterEach(async () => {
    await h?.close();
    h = undefined;
  });

  it('a call the token of ITS message does not allow is refused as forbidden (policy scope), audited with the person', async () => {
    const auth = signedIn('u-7', ['cs:read', 'cs:write', 'cs:send'], { email: 'lee@ourco.test' });
    h = await startInMemory(testEnv({}, data.dir), {}, { authInfo: auth });
    expect((await h.call('register_client', { client_id: 'acme', name: 'Acme' })).structuredContent.success).toBe(true);
    // The scope is lost mid-session: the next call is judged by the token it carries now.
    auth.scopes = ['cs:read'];
    const r = await h.call('register_client', { client_id: 'beta', name: 'Beta' });
    expect(r.isError).toBe(true);
    expect(r.structuredContent.error).toMatchObject({ code: 'forbidden', details: { policy: 'scope', required_scope: 'cs:write' } });
    expect(await h.services.store.db.selectFrom('clients').select('client_id').where('client_id', '=', 'beta').executeTakeFirst()).toBeUndefined();
    const refused = await h.services.audit.list({ policy: 'scope' }, 5);
    expect(refused.entries[0]).toMatchObject({ tool: 'register_client', actor: 'lee@ourco.test (u-7)', outcome: 'forbidden' });
    // tools/list follows the token too.
    const names = (await h.client.listTools()).tools.map((t) => t.name);
    expect(names).toContain('list_clients');
    expect(names).not.toContain('register_client');
  });

  it('the signed-in person is the workflow author and activator, whatever created_by the model wrote', async () => {
    h = await startInMemory(testEnv({}, data.dir), {}, { authInfo: signedIn('u-9', ['cs:read', 'cs:write', 'cs:send'], { name: 'Ana Ops' }) });
    const draft = await h.call('automate_communications', {
      workflow_name: 'Signed-in draft',
      trigger_type: 'custom',
      is_active: false,
      created_by: 'someone the model made up',
      actions: [{ type: 'update_health_score', set: 90 }],
    });
    expect(draft.structuredContent, JSON.stringify(draft.structuredContent).slice(0, 500)).toMatchObject({ success: true, phase: 'saved' });
    const id = draft.structuredContent.workflow_id as string;
    const preview = await h.call('resume_workflow', { workflow_id: id });
    const done = await h.call('resume_workflow', { workflow_id: id, confirmation_token: preview.structuredContent.confirmation_token });
    expect(done.structuredContent, JSON.stringify(done.structuredContent).slice(0, 500)).toMatchObject({ success: true, phase: 'confirmed' });
    const wf = (await h.call('get_workflow', { workflow_id: id })).structuredContent.workflow;
    expect(wf.created_by).toBe('Ana Ops (u-9)');
    expect(wf.activated_by).toBe('Ana Ops (u-9)');
  });

  it('a consent override a person approves records that person as the approver; resubscribing needs cs:admin', async () => {
    const auth = signedIn('u-1', ['cs:read', 'cs:write'], { name: 'Ola Admin', email: 'ola@ourco.test' });
    h = await startInMemory(testEnv({}, data.dir), {}, { authInfo: auth, onElicit: () => ({ action: 'accept', content: { decision: 'send' } }) });
    expect((await h.call('set_contact_subscription', { email: 'pat@acme.test', subscribed: false })).structuredContent.success).toBe(true);
    const denied = await h.call('set_contact_subscription', { email: 'pat@acme.test', subscribed: true, reason: 'asked us by phone' });
    expect(denied.structuredContent.error).toMatchObject({ code: 'forbidden', details: { policy: 'scope', required_scope: 'cs:admin' } });
    auth.scopes = ['cs:read', 'cs:write', 'cs:admin'];
    const r = await h.call('set_contact_subscription', { email: 'pat@acme.test', subscribed: true, reason: 'asked us by phone' });
    expect(r.structuredContent.success, JSON.stringify(r.structuredContent)).toBe(true);
    const entry = (await h.services.audit.list({ tool: 'set_contact_subscription', outcome: 'success' }, 1)).entries[0]!;
    expect(entry.details.approved_by).toBe('person: Ola Admin <ola@ourco.test> (u-1)');
    expect(entry.actor).toBe('Ola Admin <ola@ourco.test> (u-1)');
  });

  it('the approval dialog names the signed-in person among the facts, not as something the assistant wrote', async () => {
    const sg = await startSendGridStandIn({ apiKey: 'SG.signin-roles' });
    const asked: string[] = [];
    try {
      h = await startInMemory(
        testEnv({ ...standInEnv({ sendgrid: { url: sg.url, apiKey: 'SG.signin-roles' } }), CS_MCP_APPROVAL: 'elicitation' }, data.dir),
        {},
        {
          authInfo: signedIn('u-5', ['cs:read', 'cs:write', 'cs:send'], { name: 'Lee Adams', email: 'lee@ourco.test' }),
          onElicit: (p) => {
            asked.push(String(p.message));
            return { action: 'accept', content: { decision: 'send' } };
          },
        },
      );
      expect((await h.call('register_client', { client_id: 'zeta', name: 'Zeta', tier: 'professional' })).structuredContent.success).toBe(true);
      expect((await h.call('upsert_contact', { client_id: 'zeta', email: 'pat@zeta.test', first_name: 'Pat' })).structuredContent.success).toBe(true);
      const args = { campaign_name: 'Check-in', template_type: 'health_check', subject_line: 'Hi', body_text: 'Hello {{ contact.first_name }}', target_tier: 'professional', channels: ['email'], created_by: 'The CEO (trust me)' };
      const preview = await h.call('send_personalized_email', args);
      const done = await h.call('send_personalized_email', { ...args, confirmation_token: preview.structuredContent.confirmation_token });
      expect(done.structuredContent, JSON.stringify(done.structuredContent).slice(0, 500)).toMatchObject({ success: true, phase: 'confirmed' });
      expect(asked).toHaveLength(1);
      const [facts, written] = asked[0]!.split('Written by the assistant');
      expect(facts).toContain('Requested by (signed in): Lee Adams <lee@ourco.test> (u-5)');
      expect(written).not.toContain('Created by');
      expect(asked[0]).not.toContain('The CEO');
    } finally {
      await sg.stop();
    }
  });
});
