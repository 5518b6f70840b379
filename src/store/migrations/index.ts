import type { Migration } from 'kysely';
import * as roster from './0001_roster.js';
import * as campaigns from './0002_campaigns.js';
import * as delivery from './0003_delivery.js';
import * as safety from './0004_safety.js';
import * as customerEvents from './0006_customer_events.js';
import * as automations from './0007_automations.js';
import * as inbox from './0009_inbox.js';
import * as rateBudget from './0010_rate_budget.js';
import * as suppressions from './0011_suppressions.js';
import * as mixpanelBuffer from './0012_mixpanel_buffer.js';
import * as retention from './0013_retention.js';
import * as automationBudget from './0014_automation_budget.js';
import * as actors from './0015_actors.js';
import * as outboxStatusIdx from './0016_outbox_status_idx.js';
import * as outboxLeaseIdx from './0017_outbox_lease_idx.js';

/** Versioned, in order. Applied automatically at start (Kysely's Migrator holds a lock while it runs). */
export const migrations: Record<string, Migration> = {
  '0001_roster': roster,
  '0002_campaigns': campaigns,
  '0003_delivery': delivery,
  '0004_safety': safety,
  '0006_customer_events': customerEvents,
  '0007_automations': automations,
  '0009_inbox': inbox,
  '0010_rate_budget': rateBudget,
  '0011_suppressions': suppressions,
  '0012_mixpanel_buffer': mixpanelBuffer,
  '0013_retention': retention,
  '0014_automation_budget': automationBudget,
  '0015_actors': actors,
  '0016_outbox_status_idx': outboxStatusIdx,
  '0017_outbox_lease_idx': outboxLeaseIdx,
};
