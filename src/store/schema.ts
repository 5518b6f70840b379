import type { ColumnType, Generated } from 'kysely';

/**
 * The tables, for Kysely. Same schema on SQLite and PostgreSQL: booleans are 0/1 integers, JSON is
 * stored as text, timestamps are UTC ISO-8601 text, dates are 'YYYY-MM-DD' text, so one set of
 * queries serves both dialects.
 */

export interface ClientsTable {
  client_id: string;
  name: string;
  tier: 'starter' | 'standard' | 'professional' | 'enterprise';
  lifecycle_stage: 'onboarding' | 'adopting' | 'mature' | 'renewal' | 'churned';
  health_score: number | null;
  mrr: number | null;
  renewal_date: string | null;
  owner_email: string | null;
  /** JSON object, as text. */
  custom_attributes: string;
  created_at: string;
  updated_at: string;
}

export interface ClientSegmentsTable {
  client_id: string;
  segment: string;
}

export interface ContactsTable {
  contact_id: string;
  client_id: string;
  /** Lower-cased; unique per client. */
  email: string;
  name: string | null;
  first_name: string | null;
  role: string | null;
  phone: string | null;
  external_user_id: string | null;
  intercom_contact_id: string | null;
  /** user | lead: Intercom's role for intercom_contact_id, so a message needs no lookup. */
  intercom_role: string | null;
  unsubscribed: number;
  unsubscribed_at: string | null;
  unsubscribe_source: string | null;
  unsubscribe_reason: string | null;
  /** Email-only suppression (unsubscribed by email, hard bounce, spam report): blocks email channels, not in-app. */
  email_status: string | null;
  email_status_at: string | null;
  email_status_source: string | null;
  email_status_reason: string | null;
  /** IANA time zone; wins over a send window's own zone. */
  timezone: string | null;
  created_at: string;
  updated_at: string;
}

export interface TimelineTable {
  entry_id: Generated<number>;
  client_id: string;
  contact_id: string | null;
  occurred_at: string;
  /** profile_change | contact_change | subscription | message | note | tag | event | email | campaign | import */
  type: string;
  /** roster | intercom | sendgrid | mixpanel | campaign */
  channel: string;
  actor: string | null;
  summary: string;
  /** success | failed | unknown */
  outcome: string;
  /** JSON object of provider ids (message_id, note_id, …), as text. */
  provider_ids: string;
  /** JSON object with the details, as text. */
  data: string;
}

export interface CampaignsTable {
  campaign_id: string;
  name: string;
  template_type: string;
  /** JSON: the confirmed content, targeting, channels, schedule. */
  definition: string;
  content_hash: string;
  created_by: string | null;
  scheduled_at: string | null;
  created_at: string;
  confirmed_at: string | null;
  cancelled_at: string | null;
}

/** One per preview of a two-phase tool (campaigns, workflows): the token confirms exactly what was previewed. */
export interface ConfirmationTokensTable {
  token: string;
  /** campaign | workflow_activate | workflow_resume | workflow_run */
  kind: string;
  /** Hashes of what the preview showed, by part (content, audience, …), as JSON. */
  fingerprint: string;
  /** What it is about, for messages (the campaign's or workflow's name). */
  label: string;
  expires_at: string;
  used_at: string | null;
  /** What the confirmation created (campaign id, workflow id, run id). */
  result_id: string | null;
  created_at: string;
}

export interface OutboxTable {
  outbox_id: Generated<number>;
  /** campaign | automation: who produced the message. */
  source_kind: string;
  /** The campaign id or workflow id. */
  source_id: string;
  /** A finer reference inside the source (an automation enrolment step), or null. */
  source_ref: string | null;
  contact_id: string;
  client_id: string;
  channel: string;
  /** Unique for good: a producer that writes the same key twice gets one row. Sent to providers where they accept one. */
  idempotency_key: string;
  recipient_email: string;
  /** JSON MessageContent: the rendered subject/body for this recipient. */
  payload: string;
  /** JSON MessageMeta: label, tracking, custom_args. */
  meta: string;
  /** JSON MessagePolicy, or null: frequency cap, send window. */
  policy: string | null;
  /** queued | sending | sent | failed | cancelled | unknown | skipped */
  state: string;
  attempts: number;
  not_before: string;
  provider_message_id: string | null;
  error_code: string | null;
  error_message: string | null;
  updated_at: string;
  sent_at: string | null;
  lease_owner: string | null;
  lease_until: string | null;
}

export interface AuditLogTable {
  audit_id: Generated<number>;
  at: string;
  tool: string;
  /** The tool's kind (write, send, destructive, read) or `engine` for refusals made while delivering. */
  kind: string;
  client_name: string | null;
  client_version: string | null;
  session_id: string | null;
  /** The signed-in person (sign-in only): "Name <email> (sub)". */
  actor: ColumnType<string | null, string | null | undefined, string | null>;
  /** JSON: the arguments, secrets scrubbed and bodies redacted per configuration. */
  arguments: string;
  /** success, or the error code. */
  outcome: string;
  message: string | null;
  /** The policy that refused the call, when one did. */
  policy: string | null;
  /** JSON: facts of the outcome (recipients, message ids, idempotency key, consent override). */
  details: string;
  duration_ms: number;
}

export interface IdempotencyRecordsTable {
  /** The tool name. */
  scope: string;
  /** The caller's idempotency_key, or `auto:<hash>` for the duplicate window. */
  key: string;
  request_hash: string;
  /** in_progress | completed */
  state: string;
  /** JSON: the result returned to the first call. */
  result: string | null;
  /** A short description of the first call, for refusals. */
  summary: string | null;
  created_at: string;
  updated_at: string;
  expires_at: string;
}

export interface SendCountersTable {
  /** UTC day, YYYY-MM-DD. */
  day: string;
  sent: number;
}

export interface CustomerEventsTable {
  event_id: Generated<number>;
  /** When it happened (the producer's time). */
  occurred_at: string;
  /** When this server stored it. */
  recorded_at: string;
  client_id: string | null;
  contact_id: string | null;
  /** e.g. login, meeting_booked, email_opened, health_score_changed. */
  name: string;
  /** JSON object. */
  properties: string;
  /** Who recorded it: tool:<name>, roster, webhook:<provider>, automation. */
  source: string;
  /** A finer reference: the workflow whose step caused it, the provider's message id… */
  source_ref: string | null;
  /** How many automation steps led to it (0: not caused by an automation); stops trigger loops. */
  depth: number;
  /** Unique when set: the same inbound event (e.g. a provider's event id) is stored once. */
  dedup_key: string | null;
}

export interface InboxEventsTable {
  inbox_id: Generated<number>;
  /** sendgrid | intercom | events */
  provider: string;
  /** Unique: `sendgrid:<sg_event_id>`, `intercom:<notification id>`, `events:<id>`. */
  dedup_key: string;
  /** SendGrid's event, Intercom's topic, or the product event's name. */
  event_type: string;
  /** The address the event is about, when it names one (lower-cased). */
  email: string | null;
  /** The provider's time of the event. */
  occurred_at: string;
  received_at: string;
  /** JSON: the event as the provider sent it. */
  payload: string;
  /** pending | processed | unmatched (no roster contact) | ignored (nothing to do) | failed (gave up after retries) */
  state: string;
  attempts: number;
  next_attempt_at: string;
  lease_owner: string | null;
  lease_until: string | null;
  processed_at: string | null;
  /** What processing did, or why it did nothing. */
  note: string | null;
  last_error: string | null;
}

export interface WebhookEndpointsTable {
  /** sendgrid | intercom | events */
  endpoint: string;
  last_verified_at: string;
  verified_requests: number;
}

export interface MessageEventsTable {
  /** The outbox row's idempotency_key. */
  outbox_key: string;
  /** delivered | bounced | dropped | opened | clicked | replied | unsubscribed | spam_reported */
  kind: string;
  source_kind: string;
  source_id: string;
  channel: string;
  /** When it first happened (the provider's time). */
  first_at: string;
}

export interface WorkflowsTable {
  workflow_id: string;
  name: string;
  description: string | null;
  /** draft | active | paused | archived */
  status: string;
  /** The current definition's version (workflow_versions). */
  version: number;
  trigger_type: string;
  created_by: string | null;
  created_at: string;
  updated_at: string;
  activated_at: string | null;
  /** Who activated it last (sign-in only). */
  activated_by: ColumnType<string | null, string | null | undefined, string | null>;
  paused_at: string | null;
  archived_at: string | null;
  /** Customer events up to this id predate the (re)activation: they never trigger it. */
  event_floor: number;
  /** time_based: the next scheduled occurrence. */
  next_fire_at: string | null;
  last_fired_at: string | null;
  /** State-based triggers (renewals, usage, inactivity): when they were last evaluated. */
  last_swept_at: string | null;
  /** Why it was paused by the server itself (`runaway`: over its action budget); null when a person paused it. */
  pause_reason: string | null;
}

export interface AutomationBudgetTable {
  /** A workflow id, or `*` for all automations together. */
  scope: string;
  /** The clock hour (UTC), e.g. 2026-12-06T23. */
  hour: string;
  used: number;
}

export interface WorkflowVersionsTable {
  workflow_id: string;
  version: number;
  /** JSON WorkflowDefinition: what enrolments of this version follow. */
  definition: string;
  created_at: string;
}

export interface WorkflowEnrollmentsTable {
  enrollment_id: string;
  workflow_id: string;
  version: number;
  /** Unique: one trigger occurrence enrols a subject at most once. */
  occurrence_key: string;
  /** contact | client */
  subject_kind: string;
  client_id: string;
  contact_id: string | null;
  /** active | completed | exited (goal reached) | cancelled */
  state: string;
  /** The next step to run. */
  step_index: number;
  next_run_at: string;
  lease_owner: string | null;
  lease_until: string | null;
  /** How many automation steps led to the triggering event (chains of workflows stop at a small depth). */
  depth: number;
  /** JSON: the trigger occurrence (event name, properties, time) for templates and goals. */
  context: string;
  /** Goal events must come after this customer event id. */
  start_event_id: number;
  enrolled_at: string;
  updated_at: string;
  finished_at: string | null;
  exit_reason: string | null;
}

export interface WorkflowStepRunsTable {
  /** enrollment_id:step_index — also the idempotency key sent where a provider accepts one. */
  run_key: string;
  workflow_id: string;
  enrollment_id: string;
  step_index: number;
  action_type: string;
  /** started | retry | done | failed | unknown | skipped */
  state: string;
  attempts: number;
  owner: string | null;
  started_at: string;
  finished_at: string | null;
  error_code: string | null;
  error_message: string | null;
  /** JSON: what the step did (provider ids, recipients queued, exclusions). */
  detail: string;
}

export interface WorkflowMarksTable {
  workflow_id: string;
  /** gate:<subject> (re-entry), occ:<occurrence> (seen), side:<subject> (usage threshold side). */
  mark: string;
  at: string;
  value: string | null;
}

export interface AutomationStateTable {
  /** e.g. `triggers`: the trigger evaluator's lease and its customer-event cursor. */
  name: string;
  owner: string | null;
  lease_until: string | null;
  position: number;
}

/** Processes sharing a provider account's rate budget, and when each last sent (UTC ISO). */
export interface RateBudgetPeersTable {
  budget_key: string;
  instance_id: string;
  seen_at: string;
}

/**
 * The suppression list: who must not be messaged, by normalised address (trimmed, lower-cased), whatever
 * roster rows carry it. Scope `all` (every channel), `email` (every email), `sendgrid_group:<id>`, `intercom`.
 */
export interface SuppressionsTable {
  address: string;
  scope: string;
  /** Who set it: `sendgrid`, `intercom:<contact id>`, or the roster tool's source (e.g. `csm_request`). */
  source: string;
  /** unsubscribed | group_unsubscribed | bounced | spam_report | dropped */
  kind: string;
  reason: string | null;
  set_at: string;
  set_by: string | null;
  /** JSON object: the event or call that set it. */
  data: string;
  lifted_at: string | null;
  lifted_by: string | null;
  lift_reason: string | null;
}

/** Mixpanel events accepted and not yet delivered (see providers/mixpanel). */
export interface MixpanelBufferTable {
  seq: Generated<number>;
  /** $insert_id with event, time and distinct_id: the same event is kept once. */
  dedup_key: string;
  insert_id: string;
  /** JSON: the event as sent to /import. */
  event: string;
  bytes: number;
  created_at: string;
}

export interface Database {
  clients: ClientsTable;
  suppressions: SuppressionsTable;
  rate_budget_peers: RateBudgetPeersTable;
  client_segments: ClientSegmentsTable;
  contacts: ContactsTable;
  timeline: TimelineTable;
  campaigns: CampaignsTable;
  confirmation_tokens: ConfirmationTokensTable;
  outbox: OutboxTable;
  audit_log: AuditLogTable;
  idempotency_records: IdempotencyRecordsTable;
  send_counters: SendCountersTable;
  customer_events: CustomerEventsTable;
  inbox_events: InboxEventsTable;
  webhook_endpoints: WebhookEndpointsTable;
  message_events: MessageEventsTable;
  workflows: WorkflowsTable;
  automation_budget: AutomationBudgetTable;
  workflow_versions: WorkflowVersionsTable;
  workflow_enrollments: WorkflowEnrollmentsTable;
  workflow_step_runs: WorkflowStepRunsTable;
  workflow_marks: WorkflowMarksTable;
  automation_state: AutomationStateTable;
  mixpanel_buffer: MixpanelBufferTable;
}

export type JsonText = ColumnType<string, string, string>;
