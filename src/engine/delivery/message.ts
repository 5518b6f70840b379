import type { ProviderName } from '../../result.js';

/**
 * What delivery knows: messages, not campaigns or automations. A producer (a confirmed campaign, an
 * automation step) writes one outbox row per message carrying everything needed to send it and to
 * record what happened; delivery never looks the producer up.
 */

export const CHANNELS = ['email', 'intercom_email', 'intercom_inapp'] as const;
export type Channel = (typeof CHANNELS)[number];

export const PROVIDER_OF_CHANNEL: Record<Channel, ProviderName> = {
  email: 'sendgrid',
  intercom_email: 'intercom',
  intercom_inapp: 'intercom',
};

/** Channels that deliver to the contact's mailbox: an email suppression (unsubscribe, bounce, spam report) blocks them. */
export function isEmailChannel(channel: Channel): boolean {
  return channel !== 'intercom_inapp';
}

export type SourceKind = 'campaign' | 'automation';

/** The rendered message for one recipient on one channel. */
export interface MessageContent {
  subject: string;
  text: string;
  html?: string;
  to_email: string;
  to_name?: string;
  external_user_id?: string;
  intercom_contact_id?: string;
  /** Intercom's role for intercom_contact_id: with both, an Intercom message needs no lookup. */
  intercom_role?: 'user' | 'lead';
  from_email?: string;
  from_name?: string;
}

/** How the message is labelled and tracked once sent. */
export interface MessageMeta {
  /** Shown in timeline entries and tracking: the campaign's or workflow's name. */
  label: string;
  /** e.g. the campaign's template type; sent as the SendGrid category. */
  category?: string;
  actor?: string | null;
  track_opens?: boolean;
  track_clicks?: boolean;
  /** Echoed by SendGrid's event webhook: ties provider events back to this row. */
  custom_args: Record<string, string>;
  /** Tracking events recorded after a successful send. */
  intercom_event?: { name: string; metadata: Record<string, string | number | boolean> };
  mixpanel_event?: { name: string; properties: Record<string, unknown> };
}

/** Days and hours a message may go out, in the contact's time zone (else `timezone`). */
export interface SendWindow {
  /** ISO weekdays 1 (Monday) … 7 (Sunday). */
  days: number[];
  /** Local hour the window opens (0–23) and closes (1–24, exclusive). */
  start_hour: number;
  end_hour: number;
  timezone: string;
}

/** Rules checked at the moment of sending, on top of consent and the daily limit (which always apply). */
export interface MessagePolicy {
  /** Counts against, and is held by, the per-contact frequency cap. */
  frequency_cap?: boolean;
  /** Over the cap: wait for the next allowed time (default) or skip the message. */
  cap_action?: 'wait' | 'skip';
  send_window?: SendWindow;
}

/** One message a producer hands to delivery. */
export interface OutboundMessage {
  source_kind: SourceKind;
  source_id: string;
  /** Finer reference inside the source (an automation enrolment step). */
  source_ref?: string;
  contact_id: string;
  client_id: string;
  channel: Channel;
  /** Unique per message for good: a producer that writes the same key twice gets one row. */
  idempotency_key: string;
  content: MessageContent;
  meta: MessageMeta;
  policy?: MessagePolicy;
  /** ISO time before which it must not be sent. */
  not_before: string;
  /**
   * Not to be delivered at all (e.g. an automation step's recipient who unsubscribed, or whose message
   * needs a value they lack): written as `skipped` with this reason, so every message outcome of a
   * producer is counted in one place.
   */
  skip?: { code: string; message: string };
}
