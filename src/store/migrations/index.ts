import type { Migration } from 'kysely';
import * as roster from './0001_roster.js';
import * as campaigns from './0002_campaigns.js';

/** Versioned, in order. Applied automatically at start (Kysely's Migrator holds a lock while it runs). */
export const migrations: Record<string, Migration> = {
  '0001_roster': roster,
  '0002_campaigns': campaigns,
};
