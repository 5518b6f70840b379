import { expect } from 'vitest';
import type { InMemoryHarness } from './mcp.js';

/** Two-phase: preview, then confirm with the token; returns both results. */
export async function activate(h: InMemoryHarness, args: Record<string, unknown>) {
  const preview = await h.call('automate_communications', args);
  expect(preview.structuredContent, JSON.stringify(preview.structuredContent).slice(0, 2000)).toMatchObject({ success: true, phase: 'preview' });
  const confirmed = await h.call('automate_communications', { ...args, confirmation_token: preview.structuredContent.confirmation_token });
  expect(confirmed.structuredContent, JSON.stringify(confirmed.structuredContent).slice(0, 2000)).toMatchObject({ success: true, phase: 'confirmed' });
  return { preview: preview.structuredContent, workflowId: confirmed.structuredContent.result_id as string, confirmed: confirmed.structuredContent };
}
