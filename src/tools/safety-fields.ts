import { z } from 'zod';

/** Fields every direct send (and non-idempotent write) shares: the caller's idempotency key and a consent override. */

export const idempotencyKey = z
  .string()
  .trim()
  .min(1)
  .max(200)
  .optional()
  .describe(
    'Your own key for this exact send (e.g. "renewal-ann-2026-11"). Reuse it on every retry: a repeat returns the first result and sends nothing. ' +
      'Without a key, an identical call within a few minutes is refused as a likely duplicate.',
  );

export const overrideConsent = z
  .strictObject({ reason: z.string().trim().min(5).max(500).describe('why this person may be contacted despite their unsubscribe, e.g. "asked us to reply to ticket 4411"') })
  .optional()
  .describe('Only when the person asked to be contacted: sends despite an unsubscribe. Recorded in the audit log; a person must approve it.');

/** Result field of a send replayed from its idempotency key. */
export const replayed = z.boolean().optional().describe('true: this is the stored result of an earlier call with the same idempotency_key; nothing was sent now');
