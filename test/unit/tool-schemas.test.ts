import { Ajv } from 'ajv';
import addFormats from 'ajv-formats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_MAX_REQUEST_BYTES } from '../../src/config.js';
import { jsonSchema } from '../../src/mcp/register.js';
import { listedTool, outputSchemaOf, prebuiltEntries, readPrebuiltListing } from '../../src/mcp/tool-listing.js';
import { allTools } from '../../src/tools/index.js';
import { InMemoryTransport } from '@modelcontextprotocol/sdk/inMemory.js';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { listingFor, VIEW_ONLY_TOOLS, VIEW_OF_TOOL, VIEWS } from '../../src/mcp/views.js';
import { createMcpServer } from '../../src/server.js';
import { startInMemory, tempDataDir, testClient, testEnv, type InMemoryHarness } from '../helpers/mcp.js';

/**
 * Our tool schemas are our API: each tool's listed definition is kept as a file snapshot
 * (test/unit/__toolsnaps__), so any change to a name, schema or annotation shows up in review.
 */
describe('tool schemas', () => {
  const data = tempDataDir();
  let h: InMemoryHarness;
  /** A client that declared MCP Apps (io.modelcontextprotocol/ui), on a server over the same services. */
  let withViews: Client;
  let close: () => Promise<void>;
  beforeAll(async () => {
    h = await startInMemory(testEnv({}, data.dir));
    const server = createMcpServer(h.services);
    const [ct, st] = InMemoryTransport.createLinkedPair();
    withViews = testClient({ views: true });
    await Promise.all([server.connect(st), withViews.connect(ct)]);
    close = async () => {
      await withViews.close();
      await server.close();
    };
  });
  afterAll(async () => {
    await close();
    await h.close();
    data.cleanup();
  });

  it('lists every declared tool once; the view-only tools only to a client that declared MCP Apps', async () => {
    const { tools } = await h.client.listTools();
    expect(tools.map((t) => t.name).sort()).toEqual(allTools.map((t) => t.name).filter((n) => !VIEW_ONLY_TOOLS.has(n)).sort());
    expect(new Set(tools.map((t) => t.name)).size).toBe(tools.length);
    expect(tools.filter((t) => t._meta !== undefined)).toEqual([]);
    const viewed = (await withViews.listTools()).tools;
    expect(viewed.map((t) => t.name).sort()).toEqual(allTools.map((t) => t.name).sort());
    // Each tool with a view names it; the view-only ones are hidden from the model (visibility ["app"]).
    for (const t of viewed) {
      const view = VIEW_OF_TOOL[t.name];
      expect(t._meta, t.name).toEqual(view ? { ui: { resourceUri: VIEWS[view], ...(VIEW_ONLY_TOOLS.has(t.name) ? { visibility: ['app'] } : {}) } } : undefined);
    }
  });

  it('annotations follow the declared kind', () => {
    for (const t of allTools) {
      if (t.kind === 'send') expect(t.idempotent ?? false, t.name).toBe(false);
      if (/(^|_)send(_|$)/.test(t.name)) expect(t.kind, t.name).toBe('send');
    }
  });

  for (const tool of allTools) {
    it(`${tool.name} matches its snapshot`, async () => {
      // View-only tools as a client with views sees them; the rest as every other client does.
      const { tools } = await (VIEW_ONLY_TOOLS.has(tool.name) ? withViews : h.client).listTools();
      const listed = tools.find((t) => t.name === tool.name);
      await expect(JSON.stringify(listed, null, 2) + '\n').toMatchFileSnapshot(`__toolsnaps__/${tool.name}.json`);
    });
  }
});

describe('the tool list a client receives', () => {
  // Clients send the whole list to the model with every request, and some cap what they accept.
  // 100 KB read strictly: 100,000 bytes, not 102,400.
  const TOOL_LIST_BUDGET_BYTES = 100_000;

  it(`stays within ${TOOL_LIST_BUDGET_BYTES / 1000} KB (${TOOL_LIST_BUDGET_BYTES.toLocaleString('en')} bytes) for all ${allTools.length - VIEW_ONLY_TOOLS.size} tools a client without views receives`, () => {
    const bytes = Buffer.byteLength(JSON.stringify({ tools: listingFor(allTools.map(listedTool), false) }));
    expect(bytes).toBeLessThanOrEqual(TOOL_LIST_BUDGET_BYTES);
  });

  it('stays within it too for what a host with views shows the model (its view links included, the view-only tools not)', () => {
    const shown = listingFor(allTools.map(listedTool), true).filter((t) => !VIEW_ONLY_TOOLS.has(t.name));
    expect(Buffer.byteLength(JSON.stringify({ tools: shown }))).toBeLessThanOrEqual(TOOL_LIST_BUDGET_BYTES);
  });

  it('output schemas carry no prose: descriptions belong on inputs, where the model reads them', () => {
    // A field may be called "description"; prose is a "description" keyword with a string value.
    for (const t of allTools) expect(JSON.stringify(outputSchemaOf(t)), t.name).not.toMatch(/"description":"/);
  });

  it('the listing npm run build wrote (dist/tool-listing.json) is what the tools declare', () => {
    // npm test builds first (pretest); a stale file would list tools the server no longer has.
    const built = readPrebuiltListing(new URL('../../dist/tool-listing.json', import.meta.url));
    expect(built, 'dist/tool-listing.json is missing: run npm run build').toBeDefined();
    expect(built).toEqual(JSON.parse(JSON.stringify(prebuiltEntries(allTools))));
  });
});

describe('published schemas every major client reads', () => {
  const published = allTools.flatMap((t) => [
    { name: `${t.name} input`, schema: jsonSchema(t.input, 'input') },
    { name: `${t.name} output`, schema: outputSchemaOf(t) },
  ]);

  it('every input and output schema compiles in Ajv strict mode', () => {
    const ajv = new Ajv({ strict: true });
    (addFormats as unknown as (a: Ajv) => void)(ajv); // the package's CJS default export, as test/helpers/openapi.ts uses it
    for (const { name, schema } of published) expect(() => ajv.compile(schema), name).not.toThrow();
  });

  it('every input schema refuses unknown keys: additionalProperties false on every object of fixed shape, nested ones too', () => {
    const open = (s: unknown, at: string): string[] => {
      if (Array.isArray(s)) return s.flatMap((x, i) => open(x, `${at}/${i}`));
      if (!s || typeof s !== 'object') return [];
      const node = s as Record<string, unknown>;
      const own = node.properties !== undefined && node.additionalProperties !== false ? [at] : [];
      const children = Object.entries(node).flatMap(([k, v]) => {
        if (k === 'enum' || k === 'const' || k === 'default' || k === 'examples') return [];
        // A map of names to schemas (a property may itself be called "properties"): walk its schemas.
        if ((k === 'properties' || k === 'patternProperties' || k === '$defs') && v && typeof v === 'object') {
          return Object.entries(v).flatMap(([name, sub]) => open(sub, `${at}/${k}/${name}`));
        }
        return open(v, `${at}/${k}`);
      });
      return [...own, ...children];
    };
    expect(allTools.filter((t) => jsonSchema(t.input, 'input').additionalProperties !== false).map((t) => t.name)).toEqual([]);
    expect(allTools.flatMap((t) => open(jsonSchema(t.input, 'input'), t.name))).toEqual([]);
  });

  it('no schema anywhere has a type array (single-type dialects such as Gemini refuse them)', () => {
    const typeArrays = (s: unknown, at: string): string[] => {
      if (Array.isArray(s)) return s.flatMap((x, i) => typeArrays(x, `${at}/${i}`));
      if (!s || typeof s !== 'object') return [];
      const own = Array.isArray((s as { type?: unknown }).type) ? [at] : [];
      return [...own, ...Object.entries(s).flatMap(([k, v]) => (k === 'enum' || k === 'const' || k === 'default' ? [] : typeArrays(v, `${at}/${k}`)))];
    };
    for (const { name, schema } of published) expect(typeArrays(schema, name)).toEqual([]);
  });

  it('any one field at its schema maximum fits in a request, with 1 MiB to spare (MCP_MAX_REQUEST_BYTES)', () => {
    // Upper bound of the bytes a field adds to a request: 3 UTF-8 bytes a character (1 for an email
    // address, ASCII by its format), times the items of every array (and entries of every record) around it.
    const fields = (s: Record<string, any>, times: number, at: string): Array<{ at: string; bytes: number }> => {
      const branches = (s.anyOf ?? s.oneOf ?? []) as Array<Record<string, any>>;
      const out = branches.flatMap((b) => fields(b, times, at));
      if (s.type === 'string' && typeof s.maxLength === 'number') out.push({ at, bytes: times * (s.maxLength * (s.format === 'email' ? 1 : 3) + 3) });
      if (s.type === 'array' && s.items) out.push(...fields(s.items, times * (s.maxItems ?? 1), `${at}[]`));
      for (const [k, v] of Object.entries((s.properties ?? {}) as Record<string, any>)) out.push(...fields(v, times, `${at}.${k}`));
      if (s.additionalProperties && typeof s.additionalProperties === 'object') out.push(...fields(s.additionalProperties, times * (s.maxProperties ?? 1), `${at}.*`));
      return out;
    };
    const all = allTools.flatMap((t) => fields(jsonSchema(t.input, 'input'), 1, t.name));
    const largest = all.reduce((a, b) => (b.bytes > a.bytes ? b : a));
    expect(largest.bytes, `${largest.at} takes up to ${largest.bytes} bytes`).toBeLessThanOrEqual(DEFAULT_MAX_REQUEST_BYTES - 1024 * 1024);
    // The size found here is the one README quotes.
    expect(largest.at).toBe('sendgrid_send_bulk_emails.recipients[].name');
  });
});
