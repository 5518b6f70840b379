import { randomBytes } from 'node:crypto';
import { OpenApiContract } from '../helpers/openapi.js';
import { HttpStandIn, type RecordedRequest, type Reply, type StandInOptions } from './http-stand-in.js';

/**
 * A local SendGrid v3 (Mail Send, Stats): 202 + X-Message-Id, SendGrid's error list, Bearer auth,
 * X-RateLimit-* headers (and, like SendGrid, 429s without them: `bare429Probability` or an injected
 * fault with `withoutRateHeaders`), the 1,000-personalization and 1,000-address limits, the 10,000-byte
 * limits on a personalization's substitutions and on custom_args, and every
 * request and answer validated against test/contracts/sendgrid-mail-v3.yaml and sendgrid-stats-v3.yaml.
 */

let contract: OpenApiContract | undefined;
let statsContract: OpenApiContract | undefined;

/**
 * The published description, with the defects test/contracts/README.md lists patched in this test copy:
 * 1. top-level custom_args is an object of strings (the file types it as a string);
 * 2. an error's `help` is "helper text or a link" by the file's own words, and null when there is
 *    none (as SendGrid sends it), but typed object.
 */
export function sendgridContract(): OpenApiContract {
  contract ??= OpenApiContract.load('sendgrid-mail-v3.yaml', (doc: any) => {
    const schema = doc.components.requestBodies.PostMailSend.content['application/json'].schema;
    schema.properties.custom_args = { type: 'object', additionalProperties: { type: 'string' } };
    doc.components.schemas.ErrorResponse.properties.errors.items.properties.help.type = ['string', 'object', 'null'];
    // 3. Not in the Mail Send file: GET /v3/templates/{template_id} of SendGrid's Transactional Templates
    //    API (https://www.twilio.com/docs/sendgrid/api-reference/transactional-templates/retrieve-a-single-transactional-template),
    //    the fields we read, as SendGrid publishes them; added here, not vendored.
    doc.paths['/v3/templates/{template_id}'] = {
      get: {
        operationId: 'GetTemplate',
        parameters: [{ name: 'template_id', in: 'path', required: true, schema: { type: 'string' } }],
        responses: {
          '200': {
            description: '',
            content: {
              'application/json': {
                schema: {
                  type: 'object',
                  required: ['id', 'name', 'generation', 'versions'],
                  properties: {
                    id: { type: 'string' },
                    name: { type: 'string' },
                    generation: { type: 'string', enum: ['legacy', 'dynamic'] },
                    updated_at: { type: 'string' },
                    versions: {
                      type: 'array',
                      items: {
                        type: 'object',
                        required: ['id', 'template_id', 'active', 'name', 'subject'],
                        properties: {
                          id: { type: 'string' },
                          template_id: { type: 'string' },
                          active: { type: 'integer', enum: [0, 1] },
                          name: { type: 'string' },
                          subject: { type: 'string' },
                          updated_at: { type: 'string' },
                          html_content: { type: 'string' },
                          plain_content: { type: 'string' },
                          editor: { type: 'string', enum: ['code', 'design'] },
                        },
                      },
                    },
                  },
                },
              },
            },
          },
          '404': { description: '', content: { 'application/json': { schema: { $ref: '#/components/schemas/ErrorResponse' } } } },
        },
      },
    };
  });
  return contract;
}

/** The Stats description, unpatched. */
export function sendgridStatsContract(): OpenApiContract {
  statsContract ??= OpenApiContract.load('sendgrid-stats-v3.yaml');
  return statsContract;
}

/** Every metric SendGrid reports for a day (the Stats description requires them all). */
const STAT_METRICS = [
  'blocks', 'bounce_drops', 'bounces', 'clicks', 'deferred', 'delivered', 'invalid_emails', 'opens', 'processed',
  'requests', 'spam_report_drops', 'spam_reports', 'unique_clicks', 'unique_opens', 'unsubscribe_drops', 'unsubscribes',
] as const;

const sgError = (status: number, message: string, field: string | null = null, help: string | null = null): Reply => ({
  status,
  body: { errors: [{ message, field, help }] },
});

export interface SentMessage {
  message_id: string;
  to: string;
  /** What this recipient sees: the personalization's subject, else the message's, substitutions applied. */
  subject?: string;
  /** The text/plain and text/html parts this recipient gets, substitutions applied (as SendGrid renders them). */
  text?: string;
  html?: string;
  /** Message-level custom_args merged with the personalization's (the personalization wins), as event webhooks report them. */
  custom_args: Record<string, string>;
  body: Record<string, any>;
  personalization: Record<string, any>;
}

/** SendGrid's substitutions: each tag replaced by the personalization's value, in subject and content. */
function substitute(text: string | undefined, subs: Record<string, string> | undefined): string | undefined {
  if (text === undefined || !subs) return text;
  let out = text;
  for (const [tag, value] of Object.entries(subs)) out = out.split(tag).join(value);
  return out;
}

/** SendGrid's 10,000-byte limits (sendgrid-mail-v3.yaml): counted as the UTF-8 bytes of every key and value. */
export const SIZE_LIMIT_BYTES = 10_000;

export function collectiveBytes(o: Record<string, unknown> | undefined): number {
  let n = 0;
  for (const [k, v] of Object.entries(o ?? {})) n += Buffer.byteLength(k) + Buffer.byteLength(typeof v === 'string' ? v : JSON.stringify(v));
  return n;
}

/**
 * The limits batching relies on: each personalization's substitutions total at most 10,000 bytes, and
 * the custom_args a message carries (the message's, overridden by the personalization's) too.
 */
function overSizeLimits(b: Record<string, any>, ps: any[]): Reply | undefined {
  for (const [i, p] of ps.entries()) {
    const subs = collectiveBytes(p.substitutions);
    if (subs > SIZE_LIMIT_BYTES) {
      return sgError(400, `The total size of the substitutions of a personalization may not exceed 10,000 bytes (this one: ${subs}).`, `personalizations.${i}.substitutions`);
    }
    const args = collectiveBytes({ ...(b.custom_args ?? {}), ...(p.custom_args ?? {}) });
    if (args > SIZE_LIMIT_BYTES) {
      return sgError(400, `The total size of custom_args may not exceed 10,000 bytes (personalization ${i}: ${args}).`, `personalizations.${i}.custom_args`);
    }
  }
  const top = collectiveBytes(b.custom_args);
  if (top > SIZE_LIMIT_BYTES) return sgError(400, `The total size of custom_args may not exceed 10,000 bytes (this one: ${top}).`, 'custom_args');
  return undefined;
}

export class SendGridStandIn extends HttpStandIn {
  /** One entry per recipient address per accepted request. */
  readonly delivered: SentMessage[] = [];

  constructor(options: Partial<StandInOptions> & { apiKey?: string } = {}) {
    const key = options.apiKey ?? 'SG.test-key';
    super(
      {
        name: 'sendgrid',
        contracts: [sendgridContract(), sendgridStatsContract()],
        violationBody: (message) => ({ errors: [{ field: null, message, help: null }] }),
        authorize: (r) => (r.headers.authorization === `Bearer ${key}` ? undefined : sgError(401, 'The provided authorization grant is invalid, expired, or revoked')),
        rateLimitedBody: { errors: [{ field: null, message: 'too many requests' }] },
        ...options,
      },
      (r) => this.routeRequest(r),
    );
  }

  /** How many messages each address received. */
  countsByAddress(): Map<string, number> {
    const m = new Map<string, number>();
    for (const d of this.delivered) m.set(d.to, (m.get(d.to) ?? 0) + 1);
    return m;
  }

  /** Dynamic templates GET /v3/templates/{id} answers with (seedTemplate). */
  readonly templates = new Map<string, { name: string; subject: string; html?: string }>();

  seedTemplate(id: string, t: { name: string; subject: string; html?: string }): void {
    this.templates.set(id, t);
  }

  private routeRequest(r: RecordedRequest): Reply | undefined {
    const tpl = /^\/v3\/templates\/([^/]+)$/.exec(r.path);
    if (r.method === 'GET' && tpl) {
      const id = decodeURIComponent(tpl[1]!);
      const t = this.templates.get(id);
      if (!t) return sgError(404, 'resource not found');
      return {
        status: 200,
        body: {
          id,
          name: t.name,
          generation: 'dynamic',
          updated_at: '2026-01-01 00:00:00',
          versions: [
            { id: `${id}-v1`, template_id: id, active: 0, name: 'old', subject: 'an older subject', updated_at: '2025-01-01 00:00:00', editor: 'code' },
            { id: `${id}-v2`, template_id: id, active: 1, name: 'current', subject: t.subject, updated_at: '2026-01-01 00:00:00', editor: 'code', ...(t.html ? { html_content: t.html } : {}) },
          ],
        },
      };
    }
    if (r.method === 'POST' && r.path === '/v3/mail/send') {
      if (r.rawBody.length > 20 * 1024 * 1024) return sgError(413, 'The JSON payload you have included in your request is too large.');
      const b = r.body as Record<string, any>;
      const ps: any[] = Array.isArray(b?.personalizations) ? b.personalizations : [];
      if (!ps.length) return sgError(400, 'The personalizations field is required and must have at least one personalization.', 'personalizations');
      if (ps.length > 1000) return sgError(400, 'The personalizations field can contain at most 1000 items.', 'personalizations');
      const addresses = ps.reduce((n, p) => n + (p.to?.length ?? 0) + (p.cc?.length ?? 0) + (p.bcc?.length ?? 0), 0);
      if (addresses > 1000) return sgError(400, 'The total number of recipients must be no more than 1000.', 'personalizations');
      if (!b.from?.email) return sgError(400, 'The from object must be provided for every email send.', 'from');
      if (!b.template_id && !b.subject && !ps.every((p) => p.subject)) return sgError(400, 'The subject is required.', 'subject');
      const tooLarge = overSizeLimits(b, ps);
      if (tooLarge) return tooLarge;
      const message_id = randomBytes(11).toString('base64url');
      const part = (type: string) => (b.content as Array<{ type: string; value: string }> | undefined)?.find((c) => c.type === type)?.value;
      for (const p of ps) {
        for (const to of p.to ?? []) {
          this.delivered.push({
            message_id,
            to: String(to.email).toLowerCase(),
            subject: substitute(p.subject ?? b.subject, p.substitutions),
            text: substitute(part('text/plain'), p.substitutions),
            html: substitute(part('text/html'), p.substitutions),
            custom_args: { ...(b.custom_args ?? {}), ...(p.custom_args ?? {}) },
            body: b,
            personalization: p,
          });
        }
      }
      return { status: 202, headers: { 'X-Message-Id': message_id } };
    }
    if (r.method === 'GET' && (r.path === '/v3/stats' || r.path === '/v3/categories/stats')) {
      const start = r.query.get('start_date');
      if (!start) return sgError(400, 'start_date is required', 'start_date');
      const n = this.delivered.length;
      const metrics = {
        ...Object.fromEntries(STAT_METRICS.map((m) => [m, 0])),
        requests: n,
        processed: n,
        delivered: n,
      };
      const cats = r.query.getAll('categories');
      return {
        status: 200,
        body: [{ date: start, stats: cats.length ? cats.map((name) => ({ type: 'category', name, metrics })) : [{ metrics }] }],
      };
    }
    return undefined;
  }
}

export async function startSendGridStandIn(options: ConstructorParameters<typeof SendGridStandIn>[0] = {}): Promise<SendGridStandIn> {
  return new SendGridStandIn(options).start();
}
