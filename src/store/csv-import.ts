import fs from 'node:fs';
import { parse } from 'csv-parse';
import { z } from 'zod';
import type { Logger } from '../log.js';
import { invalidInput } from '../result.js';
import type { Store } from './index.js';
import { clientFieldsSchema, clientIdSchema, contactFieldsSchema, type NewClient } from './roster-model.js';
import type { CustomerEventInput } from './customer-events.js';
import { clientChangeEvents, newContactRow, toClientView } from './roster.js';
import type { ContactsTable } from './schema.js';

/**
 * CSV import: one row per contact, with its client's columns repeated on each row.
 *
 * Columns (header names, any order; only client_id, client_name and contact_email are required):
 *   client_id, client_name, tier, segments (separated by ";" or "|"), lifecycle_stage, health_score, mrr,
 *   renewal_date (YYYY-MM-DD), owner_email, contact_email, contact_name, contact_first_name, contact_role,
 *   contact_phone, contact_external_user_id, and custom.<name> for client custom attributes.
 *
 * The file is read twice, streaming: first every row is validated (nothing is written), then, if the
 * file is clean or skip_invalid is set, clients and contacts are upserted in batched transactions.
 * Rows of one client must agree on the client's columns: a later row that gives a different non-empty
 * value than the client's first row is an error on that row (so no silent "last row wins").
 */

const MAX_ERRORS = 200;
const BATCH = 1000;
/** An import this large changes the tables enough that the planner's statistics need a refresh. */
const ANALYZE_AFTER_ROWS = 1000;

const rowSchema = z.object({
  client_id: clientIdSchema,
  client_name: clientFieldsSchema.shape.name,
  tier: clientFieldsSchema.shape.tier.optional(),
  lifecycle_stage: clientFieldsSchema.shape.lifecycle_stage.optional(),
  health_score: z.coerce.number().pipe(clientFieldsSchema.shape.health_score.unwrap()).optional(),
  mrr: z.coerce.number().pipe(z.number().min(0)).optional(),
  renewal_date: clientFieldsSchema.shape.renewal_date.unwrap().optional(),
  owner_email: clientFieldsSchema.shape.owner_email.unwrap().optional(),
  segments: z
    .string()
    .transform((s) => s.split(/[;|]/).map((x) => x.trim().toLowerCase()).filter(Boolean))
    .pipe(clientFieldsSchema.shape.segments)
    .optional(),
  contact_email: contactFieldsSchema.shape.email,
  contact_name: z.string().trim().max(200).optional(),
  contact_first_name: z.string().trim().max(100).optional(),
  contact_role: z.string().trim().toLowerCase().max(50).optional(),
  contact_phone: z.string().trim().max(50).optional(),
  contact_external_user_id: z.string().trim().max(200).optional(),
});

const CLIENT_COLUMNS = ['client_name', 'tier', 'lifecycle_stage', 'health_score', 'mrr', 'renewal_date', 'owner_email', 'segments'] as const;

export interface ImportResult {
  imported: boolean;
  rows: number;
  clients_created: number;
  clients_updated: number;
  contacts_created: number;
  contacts_updated: number;
  rows_skipped: number;
  errors: Array<{ row: number; field: string; problem: string }>;
  errors_truncated: boolean;
}

interface ParsedRow {
  row: number;
  data: z.output<typeof rowSchema>;
  custom: Record<string, string>;
}

async function* readRows(file: string): AsyncGenerator<{ row: number; record: Record<string, string> }> {
  const parser = fs.createReadStream(file).pipe(
    parse({ columns: (h: string[]) => h.map((c) => c.trim().toLowerCase()), bom: true, skip_empty_lines: true, trim: true, relax_column_count: false }),
  );
  let row = 1; // the header is row 1
  for await (const record of parser as AsyncIterable<Record<string, string>>) {
    row += 1;
    yield { row, record };
  }
}

function parseRecord(row: number, record: Record<string, string>): { ok: true; parsed: ParsedRow } | { ok: false; errors: ImportResult['errors'] } {
  const present = Object.fromEntries(Object.entries(record).filter(([k, v]) => v !== '' && !k.startsWith('custom.')));
  const r = rowSchema.safeParse(present);
  if (!r.success) return { ok: false, errors: r.error.issues.map((i) => ({ row, field: String(i.path[0] ?? '?'), problem: i.message })) };
  const custom = Object.fromEntries(
    Object.entries(record)
      .filter(([k, v]) => k.startsWith('custom.') && v !== '')
      .map(([k, v]) => [k.slice('custom.'.length), v]),
  );
  return { ok: true, parsed: { row, data: r.data, custom } };
}

export async function importClientsCsv(
  store: Store,
  file: string,
  opts: { skipInvalid: boolean; actor?: string; onProgress?: (rows: number) => Promise<void> | void; log?: Logger },
): Promise<ImportResult> {
  // Only CSV files: the tool reads the server's disk, and its error messages quote what it read.
  if (!/\.csv$/i.test(file)) {
    throw invalidInput(`file_path must name a .csv file (got ${file}).`, { field: 'file_path' });
  }
  if (!fs.existsSync(file) || !fs.statSync(file).isFile()) {
    throw invalidInput(`file_path ${file} is not a readable file on the server machine. Give the absolute path of a CSV file.`, { field: 'file_path' });
  }
  const errors: ImportResult['errors'] = [];
  let errorCount = 0;
  const invalidRows = new Set<number>();
  const clients = new Map<string, { first: ParsedRow; client: NewClient }>();
  const seenContacts = new Set<string>();
  let rows = 0;
  const addError = (e: ImportResult['errors'][number]) => {
    errorCount += 1;
    invalidRows.add(e.row);
    if (errors.length < MAX_ERRORS) errors.push(e);
  };

  // Pass 1: validate everything, write nothing.
  try {
    for await (const { row, record } of readRows(file)) {
      rows += 1;
      if (row === 2 && !('client_id' in record && 'contact_email' in record && 'client_name' in record)) {
        throw invalidInput('The CSV header needs at least client_id, client_name and contact_email columns (see the README).', { field: 'file_path' });
      }
      const r = parseRecord(row, record);
      if (!r.ok) {
        r.errors.forEach(addError);
        continue;
      }
      const { data, custom } = r.parsed;
      const key = `${data.client_id}\u0000${data.contact_email}`;
      if (seenContacts.has(key)) {
        addError({ row, field: 'contact_email', problem: `${data.contact_email} appears more than once for client ${data.client_id}` });
        continue;
      }
      const existing = clients.get(data.client_id);
      if (existing) {
        const conflict = CLIENT_COLUMNS.find(
          (c) => data[c] !== undefined && existing.first.data[c] !== undefined && JSON.stringify(data[c]) !== JSON.stringify(existing.first.data[c]),
        );
        if (conflict) {
          addError({ row, field: conflict, problem: `disagrees with row ${existing.first.row} for client ${data.client_id} (${JSON.stringify(existing.first.data[conflict])})` });
          continue;
        }
        Object.assign(existing.client.custom_attributes!, custom);
      } else {
        clients.set(data.client_id, {
          first: r.parsed,
          client: {
            client_id: data.client_id,
            name: data.client_name,
            tier: data.tier ?? 'standard',
            lifecycle_stage: data.lifecycle_stage ?? 'onboarding',
            health_score: data.health_score,
            mrr: data.mrr,
            renewal_date: data.renewal_date,
            owner_email: data.owner_email,
            segments: data.segments,
            custom_attributes: { ...custom },
          },
        });
      }
      seenContacts.add(key);
      if (rows % 10_000 === 0) await opts.onProgress?.(rows);
    }
  } catch (err) {
    if ((err as { code?: string }).code?.startsWith('CSV_')) {
      throw invalidInput(`file_path ${file} is not valid CSV: ${(err as Error).message}`, { field: 'file_path' });
    }
    throw err;
  }
  const result: ImportResult = {
    imported: false,
    rows,
    clients_created: 0,
    clients_updated: 0,
    contacts_created: 0,
    contacts_updated: 0,
    rows_skipped: invalidRows.size,
    errors,
    errors_truncated: errorCount > errors.length,
  };
  if (errorCount > 0 && !opts.skipInvalid) return result;

  // Pass 2: upsert clients (merging with what the roster has), then contacts, in batched transactions.
  const db = store.db;
  const all = [...clients.values()];
  const changeEvents: CustomerEventInput[] = [];
  for (let i = 0; i < all.length; i += BATCH) {
    const batch = all.slice(i, i + BATCH);
    await db.transaction().execute(async (trx) => {
      const ids = batch.map((b) => b.client.client_id);
      const existingRows = await trx.selectFrom('clients').selectAll().where('client_id', 'in', ids).execute();
      const existing = new Map(existingRows.map((r) => [r.client_id, toClientView(r, [])]));
      for (const { client } of batch) {
        const before = existing.get(client.client_id);
        const given = clients.get(client.client_id)!.first.data;
        const merged: NewClient = before
          ? {
              ...client,
              tier: given.tier ?? before.tier,
              lifecycle_stage: given.lifecycle_stage ?? before.lifecycle_stage,
              health_score: client.health_score ?? before.health_score,
              mrr: client.mrr ?? before.mrr,
              renewal_date: client.renewal_date ?? before.renewal_date,
              owner_email: client.owner_email ?? before.owner_email,
              custom_attributes: { ...before.custom_attributes, ...client.custom_attributes } as NewClient['custom_attributes'],
            }
          : client;
        await store.roster.writeClient(trx, merged, !before);
        if (before) result.clients_updated += 1;
        else result.clients_created += 1;
        if (before) changeEvents.push(...clientChangeEvents(client.client_id, before, merged, { source: 'import' }));
      }
      await store.events.record(trx, changeEvents.splice(0)); // health, stage and renewal changes: automations trigger on them
    });
  }

  let pending: ParsedRow[] = [];
  const flush = async () => {
    const batch = pending;
    pending = [];
    if (!batch.length) return;
    await db.transaction().execute(async (trx) => {
      const ids = [...new Set(batch.map((p) => p.data.client_id))];
      const existing = await trx.selectFrom('contacts').select(['contact_id', 'client_id', 'email']).where('client_id', 'in', ids).execute();
      const byKey = new Map(existing.map((e) => [`${e.client_id}\u0000${e.email}`, e.contact_id]));
      const now = new Date().toISOString();
      const inserts: ContactsTable[] = [];
      for (const { data } of batch) {
        const fields = {
          name: data.contact_name ?? null,
          first_name: data.contact_first_name ?? null,
          role: data.contact_role ?? null,
          phone: data.contact_phone ?? null,
          external_user_id: data.contact_external_user_id ?? null,
        };
        const id = byKey.get(`${data.client_id}\u0000${data.contact_email}`);
        if (id) {
          // Only columns the file gives overwrite: an empty cell keeps what the roster has.
          const set = Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== null));
          await trx.updateTable('contacts').set({ ...set, updated_at: now }).where('contact_id', '=', id).execute();
          result.contacts_updated += 1;
        } else {
          inserts.push(newContactRow(data.client_id, { email: data.contact_email, ...fields }, now));
          result.contacts_created += 1;
        }
      }
      for (let i = 0; i < inserts.length; i += 500) await trx.insertInto('contacts').values(inserts.slice(i, i + 500)).execute();
    });
  };
  for await (const { row, record } of readRows(file)) {
    if (invalidRows.has(row)) continue;
    const r = parseRecord(row, record);
    if (!r.ok) continue;
    pending.push(r.parsed);
    if (pending.length >= BATCH) {
      await flush();
      await opts.onProgress?.(row);
    }
  }
  await flush();
  await db.transaction().execute(async (trx) => {
    for (const { client } of all) {
      await store.timeline.append(trx, {
        client_id: client.client_id,
        type: 'import',
        channel: 'roster',
        actor: opts.actor,
        summary: `Imported from ${file.split(/[\\/]/).pop()}`,
        outcome: 'success',
      });
    }
  });
  if (rows >= ANALYZE_AFTER_ROWS) {
    await store.refreshStatistics().catch((err: unknown) => opts.log?.warn({ err }, 'refreshing planner statistics after the import failed'));
  }
  result.imported = true;
  return result;
}
