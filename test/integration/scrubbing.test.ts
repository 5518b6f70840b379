import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startInMemory, tempDataDir, testEnv, type InMemoryHarness } from '../helpers/mcp.js';

/**
 * The scrubber runs on every tool result and log line: it must remove the configured credentials in
 * every form they travel in, and leave customer text alone.
 */
const SECRETS = {
  INTERCOM_ACCESS_TOKEN: 'dG9rOmludGVyY29tLXRva2VuLTEyMw==',
  SENDGRID_API_KEY: 'SG.abcdefghijklmnopqrstuv.ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq',
  MIXPANEL_API_SECRET: 'mp-api-secret-0123456789',
  MIXPANEL_SERVICE_ACCOUNT_SECRET: 'svc/secret+with=odd&chars',
  MCP_HTTP_TOKEN: 'http-token-0123456789abcdef0123456789',
};
const USER = 'svc-account.12345.mp-service-account';

const b64 = (s: string) => Buffer.from(s).toString('base64');
/** Every form a secret may leave the process in. */
function encodings(secret: string): string[] {
  return [secret, encodeURIComponent(secret), JSON.stringify(secret).slice(1, -1), b64(secret), b64(`${secret}:`), b64(`${secret}:`).replace(/=+$/, ''), Buffer.from(`${secret}:`).toString('base64url')];
}
const ALL_FORMS = [...Object.values(SECRETS).flatMap(encodings), b64(`${USER}:${SECRETS.MIXPANEL_SERVICE_ACCOUNT_SECRET}`)];

const CUSTOMER_TEXT = {
  name: 'Basic Fitness Studio',
  tagline: 'a bearer of good news',
  guide: 'basic onboarding guide',
  header_like: 'Bearer bonds and Basic plans',
  office: 'Our SG. office (SG.Ltd, Singapore) opens at 9.',
  token_word: 'token: the red one',
};

describe('secret scrubbing', () => {
  const data = tempDataDir();
  let h: InMemoryHarness;
  beforeAll(async () => {
    h = await startInMemory(testEnv({ ...SECRETS, MIXPANEL_SERVICE_ACCOUNT_USERNAME: USER, MIXPANEL_PROJECT_ID: '1' }, data.dir));
  });
  afterAll(async () => {
    await h.close();
    data.cleanup();
  });

  it('customer text that looks like auth words survives untouched, stored and returned', async () => {
    const { name, ...custom } = CUSTOMER_TEXT;
    const r = await h.call('register_client', { client_id: 'basic-fitness', name, custom_attributes: custom });
    expect(r.structuredContent.success).toBe(true);
    const o = await h.call('get_client_overview', { client_id: 'basic-fitness' });
    expect(o.structuredContent.client.name).toBe(name);
    expect(o.structuredContent.client.custom_attributes).toEqual(custom);
    expect(JSON.stringify(o.content)).not.toContain('[REDACTED]');
  });

  it('every encoding of every configured secret is redacted in tool results', async () => {
    const custom = Object.fromEntries(ALL_FORMS.map((f, i) => [`k${i}`, `before ${f} after`]));
    const r = await h.call('register_client', { client_id: 'leaky-co', name: 'Leaky Co', custom_attributes: custom });
    expect(r.structuredContent.success).toBe(true);
    const text = JSON.stringify(r);
    for (const f of ALL_FORMS) expect(text, f).not.toContain(f);
    for (const [k] of Object.entries(custom)) expect(r.structuredContent.client.custom_attributes[k]).toBe('before [REDACTED] after');
  });

  it('every encoding of every configured secret is redacted in logs; customer text is not', () => {
    const before = h.logs.length;
    h.services.log.info({ forms: ALL_FORMS, header: `Authorization: Basic ${b64(`${USER}:${SECRETS.MIXPANEL_SERVICE_ACCOUNT_SECRET}`)}` }, `leak ${ALL_FORMS.join(' ')}`);
    h.services.log.info({ customer: CUSTOMER_TEXT }, CUSTOMER_TEXT.name);
    const lines = h.logs.slice(before).join('');
    for (const f of ALL_FORMS) expect(lines, f).not.toContain(f);
    for (const t of Object.values(CUSTOMER_TEXT)) expect(lines).toContain(JSON.stringify(t).slice(1, -1));
  });
});
