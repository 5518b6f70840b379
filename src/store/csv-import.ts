import type { Kysely } from 'kysely';
import { z } from 'zod';
import type { Logger } from '../log.js';
import { invalidInput, ToolError } from '../result.js';
import { openCsvFile, readCsvRows, type CsvFile } from './csv-source.js';
import type { Store } from './index.js';
import { clientFieldsSchema, clientIdSchema, contactFieldsSchema, customAttributesSchema, type NewClient } from './roster-model.js';
import type { CustomerEventInput } from './customer-events.js';
import { clientChangeEvents, newContactRow, toClientView } from './roster.js';
import { activeSuppressions, syncContactConsent } from './suppressions.js';
import type { ContactsTable, Database } from './schema.js';

/**
 * CSV import: one row per contact, with its client's columns repeated on each row.
 *
 * Columns (header names, any order; only client_id, client_name and contact_email are required):
 *   client_id, client_name, tier, segments (separated by ";" or "|"), lifecycle_stage, health_score, mrr,
 *   renewal_date (YYYY-MM-DD), owner_email, contact_email, contact_name, contact_first_name, contact_role,
 *   contact_phone, contact_external_user_id, and custom.<name> for client custom attributes.
 *
 * The file is read twice, streaming (csv-source.ts says which files and how): first every row is
 * validated (nothing is written), then, if the file is clean or skip_invalid is set, clients and contacts
 * are upserted in ONE transaction, so an import is whole or absent: a killed process or a database
 * failure midway leaves the roster as it was, never clients without their contacts.
 * Rows of one client must agree on the client's columns: a later row that gives a different non-empty
 * value than the client's first row is an error on that row (so no silent "last row wins").
 */

const MAX_ERRORS = 200;
/** Rows per round of writes (and per progress report) inside the one transaction. */
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

const REQUIRED_COLUMNS = ['client_id', 'client_name', 'contact_email'];
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

/** The custom attributes a row adds to its client, or the problems with them (named custom.<name>). */
function mergeCustom(row: number, current: Record<string, unknown>, custom: Record<string, string>): { ok: true; merged: NewClient['custom_attributes'] } | { ok: false; errors: ImportResult['errors'] } {
  const r = customAttributesSchema.safeParse({ ...current, ...custom });
  if (r.success) return { ok: true, merged: r.data };
  return {
    ok: false,
    errors: r.error.issues.map((i) => ({ row, field: i.path.length ? `custom.${String(i.path[0])}` : 'custom.*', problem: i.message })),
  };
}

export type ImportPhase = 'validating' | 'writing';
type OnProgress = (rows: number, phase: ImportPhase) => Promise<void> | void;
export interface ImportOptions {
  skipInvalid: boolean;
  actor?: string;
  onProgress?: OnProgress;
  log?: Logger;
}

export async function importClientsCsv(store: Store, filePath: string, opts: ImportOptions): Promise<ImportResult> {
  const file = openCsvFile(filePath);
  try {
    return await importFile(store, file, filePath, opts);
  } finally {
    file.close();
  }
}

async function importFile(store: Store, file: CsvFile, filePath: string, opts: ImportOptions): Promise<ImportResult> {
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
  for await (const item of readCsvRows(file, REQUIRED_COLUMNS)) {
    rows += 1;
    const { row } = item;
    if ('problems' in item) {
      item.problems.forEach((p) => addError({ row, ...p }));
      continue;
    }
    const r = parseRecord(row, item.record);
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
    }
    const merged = mergeCustom(row, existing?.client.custom_attributes ?? {}, custom);
    if (!merged.ok) {
      merged.errors.forEach(addError);
      continue;
    }
    if (existing) {
      existing.client.custom_attributes = merged.merged;
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
          custom_attributes: merged.merged,
        },
      });
    }
    seenContacts.add(key);
    if (rows % 10_000 === 0) await opts.onProgress?.(rows, 'validating');
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
  if (errorCount > 0 && (!opts.skipInvalid || clients.size === 0)) {
    // Nothing is imported: that is a refusal, never a success with `imported: false` a caller could misread.
    const rowsWithErrors = invalidRows.size;
    throw invalidInput(
      `Nothing was imported: ${rowsWithErrors} of ${rows} rows have errors (${errorCount} problems; the first ${errors.length} are in details.errors, by row and column). ` +
        (clients.size === 0
          ? 'No row is valid: correct the file and import it again.'
          : 'A file with errors imports nothing: correct those rows, or call again with skip_invalid: true to import the valid rows only.'),
      { rows, rows_with_errors: rowsWithErrors, error_count: errorCount, errors, errors_truncated: errorCount > errors.length },
    );
  }

  // Pass 2: one transaction — clients (merging with what the roster has), contacts, timeline.
  try {
    await store.db.transaction().execute(async (trx) => {
      await writeClients(store, trx, clients, result);
      await writeContacts(trx, file, invalidRows, result, opts.onProgress);
      const name = filePath.split(/[\\/]/).pop();
      for (const { client } of clients.values()) {
        await store.timeline.append(trx, { client_id: client.client_id, type: 'import', channel: 'roster', actor: opts.actor, summary: `Imported from ${name}`, outcome: 'success' });
      }
    });
  } catch (err) {
    if (err instanceof ToolError) throw err;
    opts.log?.error({ err }, 'import failed while writing; rolled back');
    throw new ToolError(
      'provider_error',
      `Writing the import to the database failed (${(err as Error).message}). Nothing was imported: the import is one transaction. Run it again once the database is reachable.`,
      { cause: err },
    );
  }
  if (rows >= ANALYZE_AFTER_ROWS) {
    await store.refreshStatistics().catch((err: unknown) => opts.log?.warn({ err }, 'refreshing planner statistics after the import failed'));
  }
  result.imported = true;
  return result;
}

async function writeClients(store: Store, trx: Kysely<Database>, clients: Map<string, { first: ParsedRow; client: NewClient }>, result: ImportResult): Promise<void> {
  const all = [...clients.values()];
  for (let i = 0; i < all.length; i += BATCH) {
    const batch = all.slice(i, i + BATCH);
    const ids = batch.map((b) => b.client.client_id);
    const existingRows = await trx.selectFrom('clients').selectAll().where('client_id', 'in', ids).execute();
    const existing = new Map(existingRows.map((r) => [r.client_id, toClientView(r, [])]));
    const changes: CustomerEventInput[] = [];
    for (const { client, first } of batch) {
      const before = existing.get(client.client_id);
      const given = first.data;
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
      if (before) changes.push(...clientChangeEvents(client.client_id, before, merged, { source: 'import' }));
    }
    await store.events.record(trx, changes, Date.now(), { fromRoster: true }); // health, stage and renewal changes: automations trigger on them
  }
}

async function writeContacts(trx: Kysely<Database>, file: CsvFile, invalidRows: Set<number>, result: ImportResult, onProgress?: OnProgress): Promise<void> {
  let pending: ParsedRow[] = [];
  const flush = async () => {
    const batch = pending;
    pending = [];
    if (!batch.length) return;
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
    // An address on the suppression list stays suppressed, whichever client it is imported under.
    const suppressed = await activeSuppressions(trx, inserts.map((c) => c.email));
    if (suppressed.size) await syncContactConsent(trx, [...suppressed.keys()]);
  };
  for await (const item of readCsvRows(file)) {
    if ('problems' in item || invalidRows.has(item.row)) continue;
    const r = parseRecord(item.row, item.record);
    if (!r.ok) continue;
    pending.push(r.parsed);
    if (pending.length >= BATCH) {
      await flush();
      await onProgress?.(item.row, 'writing');
    }
  }
  await flush();
}
