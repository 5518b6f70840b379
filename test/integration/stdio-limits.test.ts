import { McpError } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, describe, expect, it } from 'vitest';
import { startStdio, tempDataDir, testEnv } from '../helpers/mcp.js';

/** The real binary over stdio: an oversized request is answered with an error and the server stays up. */
describe('stdio: oversized requests', () => {
  const data = tempDataDir();
  afterAll(() => data.cleanup());
  const campaign = (body_text: string) => ({ campaign_name: 'Huge', template_type: 'custom', subject_line: 'Hi', body_text, target_tier: 'enterprise' });

  it('a 10 MB body_text (under the request limit, over the field limit) is invalid_input naming the field; the next call works', async () => {
    const h = await startStdio(testEnv({}, data.dir));
    try {
      const r = await h.call('send_personalized_email', campaign('x'.repeat(10 * 1024 * 1024)));
      expect(r.structuredContent.success).toBe(false);
      expect(r.structuredContent.error.code).toBe('invalid_input');
      expect(r.structuredContent.error.details.fields[0].field).toBe('body_text');
      expect((await h.call('integrations_status')).structuredContent.success).toBe(true);
    } finally {
      await h.close();
    }
  });

  it('a request over MCP_MAX_REQUEST_BYTES is dropped unread and answered (invalid_input for a tool call, a JSON-RPC error otherwise); the server stays up', async () => {
    const h = await startStdio(testEnv({ MCP_MAX_REQUEST_BYTES: String(1024 * 1024), LOG_LEVEL: 'warn' }, data.dir));
    try {
      const r = await h.call('send_personalized_email', campaign('€'.repeat(1024 * 1024)));
      expect(r.isError).toBe(true);
      expect(r.structuredContent.error.code).toBe('invalid_input');
      expect(r.structuredContent.error.message).toMatch(/over this server's limit of 1048576 bytes \(MCP_MAX_REQUEST_BYTES\); nothing was done/);
      expect(r.structuredContent.error.details.limit_bytes).toBe(1048576);

      const read = h.client.readResource({ uri: `customer://clients/${'a'.repeat(2 * 1024 * 1024)}` });
      await expect(read).rejects.toBeInstanceOf(McpError);
      await expect(read).rejects.toMatchObject({ code: -32600 });

      expect((await h.call('integrations_status')).structuredContent.success).toBe(true);
      expect(h.stderr()).toMatch(/dropped a message over MCP_MAX_REQUEST_BYTES/);
    } finally {
      await h.close();
    }
  });
});
