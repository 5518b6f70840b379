import fs from 'node:fs';
import path from 'node:path';
import { expect } from 'vitest';
import { startInMemory } from './mcp.js';

/**
 * Imports `n` enterprise contacts (`person<i>@<domain>`, `perClient` to a client) through import_clients
 * on a short-lived in-memory server over `env`'s database, and checks every one was created. Returns
 * the addresses, in order.
 */
export async function importEnterpriseRoster(env: Record<string, string>, dir: string, n: number, opts: { domain: string; perClient?: number }): Promise<string[]> {
  const perClient = opts.perClient ?? 10;
  const emails = Array.from({ length: n }, (_, i) => `person${i}@${opts.domain}`);
  const lines = ['client_id,client_name,tier,contact_email,contact_first_name'];
  emails.forEach((email, i) => lines.push(`client-${Math.floor(i / perClient)},Client ${Math.floor(i / perClient)},enterprise,${email},P${i}`));
  const csv = path.join(dir, 'roster.csv');
  fs.writeFileSync(csv, lines.join('\n'));
  const seeder = await startInMemory(env);
  try {
    expect((await seeder.call('import_clients', { file_path: csv })).structuredContent.contacts_created).toBe(n);
  } finally {
    await seeder.close();
  }
  return emails;
}
