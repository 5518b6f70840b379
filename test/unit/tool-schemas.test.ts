import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allTools } from '../../src/tools/index.js';
import { startInMemory, tempDataDir, testEnv, type InMemoryHarness } from '../helpers/mcp.js';

/**
 * Our tool schemas are our API: each tool's listed definition is kept as a file snapshot
 * (test/unit/__toolsnaps__), so any change to a name, schema or annotation shows up in review.
 */
describe('tool schemas', () => {
  const data = tempDataDir();
  let h: InMemoryHarness;
  beforeAll(async () => {
    h = await startInMemory(testEnv({}, data.dir));
  });
  afterAll(async () => {
    await h.close();
    data.cleanup();
  });

  it('lists every declared tool once', async () => {
    const { tools } = await h.client.listTools();
    expect(tools.map((t) => t.name).sort()).toEqual(allTools.map((t) => t.name).sort());
    expect(new Set(tools.map((t) => t.name)).size).toBe(tools.length);
  });

  it('annotations follow the declared kind', () => {
    for (const t of allTools) {
      if (t.kind === 'send') expect(t.idempotent ?? false, t.name).toBe(false);
      if (/(^|_)send(_|$)/.test(t.name)) expect(t.kind, t.name).toBe('send');
    }
  });

  for (const tool of allTools) {
    it(`${tool.name} matches its snapshot`, async () => {
      const { tools } = await h.client.listTools();
      const listed = tools.find((t) => t.name === tool.name);
      await expect(JSON.stringify(listed, null, 2) + '\n').toMatchFileSnapshot(`__toolsnaps__/${tool.name}.json`);
    });
  }
});
