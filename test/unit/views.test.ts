import { EXTENSION_ID, RESOURCE_MIME_TYPE } from '@modelcontextprotocol/ext-apps/server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listingFor, showsViews, UI_EXTENSION, VIEW_MIME_TYPE, VIEW_OF_TOOL, VIEWS } from '../../src/mcp/views.js';
import { allTools } from '../../src/tools/index.js';
import { startInMemory, tempDataDir, testEnv, type InMemoryHarness } from '../helpers/mcp.js';

describe('MCP Apps declarations', () => {
  it('use the extension package\'s own id and MIME type', () => {
    expect(UI_EXTENSION).toBe(EXTENSION_ID);
    expect(VIEW_MIME_TYPE).toBe(RESOURCE_MIME_TYPE);
  });

  it('a client shows views only when it declared the extension (with the HTML type, or no type list)', () => {
    expect(showsViews(undefined)).toBe(false);
    expect(showsViews({})).toBe(false);
    expect(showsViews({ extensions: {} } as never)).toBe(false);
    expect(showsViews({ extensions: { [EXTENSION_ID]: {} } } as never)).toBe(true);
    expect(showsViews({ extensions: { [EXTENSION_ID]: { mimeTypes: [RESOURCE_MIME_TYPE] } } } as never)).toBe(true);
    expect(showsViews({ extensions: { [EXTENSION_ID]: { mimeTypes: ['text/uri-list'] } } } as never)).toBe(false);
  });

  it('every tool named as having a view exists, and the listing without views is the plain listing', () => {
    const names = new Set(allTools.map((t) => t.name));
    for (const t of Object.keys(VIEW_OF_TOOL)) expect(names.has(t), t).toBe(true);
    const plain = [{ name: 'get_campaign_status' }] as never;
    expect(listingFor(plain, false)).toEqual(plain);
  });
});

describe('the view resources', () => {
  const data = tempDataDir();
  let h: InMemoryHarness;
  beforeAll(async () => {
    h = await startInMemory(testEnv({}, data.dir));
  });
  afterAll(async () => {
    await h.close();
    data.cleanup();
  });

  it('are listed, and read as self-contained HTML that asks for no network and allows none', async () => {
    const listed = (await h.client.listResources()).resources.filter((r) => r.uri.startsWith('ui://'));
    expect(listed.map((r) => r.uri).sort()).toEqual(Object.values(VIEWS).sort());
    for (const uri of Object.values(VIEWS)) {
      const content = (await h.client.readResource({ uri })).contents[0] as { text: string; mimeType: string; _meta?: unknown };
      expect(content.mimeType).toBe(RESOURCE_MIME_TYPE);
      expect(content._meta).toEqual({ ui: { csp: { connectDomains: [], resourceDomains: [] }, prefersBorder: true } });
      expect(content.text).toMatch(/^<!doctype html>/);
      expect(content.text).toContain(`<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'`);
      // Nothing loaded from elsewhere: no external script, style sheet or image element.
      expect(content.text).not.toMatch(/<(script|link|img)[^>]+(src|href)=/i);
      expect(content.text.length).toBeLessThan(300 * 1024);
    }
  });
});
