import { OpenApiContract } from '../helpers/openapi.js';
import { HttpStandIn, type RecordedRequest, type Reply, type StandInOptions } from './http-stand-in.js';

/**
 * A local Mixpanel ingestion API: /import with strict-mode validation (per-event failed_records on 400),
 * de-duplication by (event, time, distinct_id, $insert_id) as Mixpanel does, /engage with verbose
 * answers, Basic auth, no rate-limit headers (Mixpanel sends none). Requests and answers are validated
 * against test/contracts/mixpanel-ingestion.yaml.
 */
let contract: OpenApiContract | undefined;

/**
 * The published description with one defect patched (test/contracts/README.md): /import marks
 * `project_id` required, but its own text says it serves to authenticate service-account credentials,
 * and the same operation accepts project-secret auth, where there is no project id to send.
 */
export function mixpanelContract(): OpenApiContract {
  contract ??= OpenApiContract.load('mixpanel-ingestion.yaml', (doc: any) => {
    doc.paths['/import'].post.parameters.find((p: any) => p.name === 'project_id').required = false;
  });
  return contract;
}

export class MixpanelStandIn extends HttpStandIn {
  /** Unique events stored (after de-duplication). */
  readonly events = new Map<string, { event: string; properties: Record<string, any> }>();
  readonly profiles = new Map<string, Record<string, any>>();
  /** Events whose name makes strict mode reject them (to exercise failed_records). */
  rejectEventNamed = '__invalid__';

  constructor(options: Partial<StandInOptions> & { secret?: string; token?: string } = {}) {
    const secret = options.secret ?? 'mp-secret';
    super(
      {
        name: 'mixpanel',
        contracts: [mixpanelContract()],
        violationBody: (message) => ({ code: 422, error: message, status: 'error' }),
        rateHeaders: false,
        contractPath: (r) => {
          if (r.path !== '/engage') return r.path;
          const op = Object.keys(((r.body as any[]) ?? [])[0] ?? {}).find((k) => k.startsWith('$') && !['$token', '$distinct_id'].includes(k));
          const byOperation: Record<string, string> = {
            $set: '/engage#profile-set',
            $set_once: '/engage#profile-set-once',
            $add: '/engage#profile-numerical-add',
            $union: '/engage#profile-union',
            $append: '/engage#profile-list-append',
            $remove: '/engage#profile-list-remove',
            $unset: '/engage#profile-unset',
            $delete: '/engage#profile-delete',
          };
          return byOperation[op ?? ''];
        },
        authorize: (r) => {
          if (r.path !== '/import') return undefined;
          const expected = `Basic ${Buffer.from(`${secret}:`).toString('base64')}`;
          return r.headers.authorization === expected ? undefined : { status: 401, body: { code: 401, error: 'Invalid credentials', status: 'error' } };
        },
        ...options,
      },
      (r) => this.routeRequest(r, options.token ?? 'mp-token'),
    );
  }

  private routeRequest(r: RecordedRequest, token: string): Reply | undefined {
    if (r.method === 'POST' && r.path === '/import') {
      if (r.query.get('strict') !== '1') return { status: 400, body: { code: 400, error: 'strict=1 expected by this stand-in', status: 'Bad Request' } };
      const batch = r.body as Array<{ event: string; properties: Record<string, any> }>;
      if (!Array.isArray(batch) || batch.length > 2000) return { status: 400, body: { code: 400, error: 'batch must be an array of at most 2000 events', status: 'Bad Request' } };
      const failed: any[] = [];
      batch.forEach((e, index) => {
        const p = e.properties ?? {};
        if (e.event === this.rejectEventNamed || !p.$insert_id || !p.distinct_id || typeof p.time !== 'number') {
          failed.push({ index, $insert_id: p.$insert_id, field: 'properties', message: `'${e.event}' is not a valid event` });
          return;
        }
        this.events.set(`${e.event}|${p.time}|${p.distinct_id}|${p.$insert_id}`, e);
      });
      const imported = batch.length - failed.length;
      if (failed.length) return { status: 400, body: { code: 400, error: 'some data points in the request failed validation', failed_records: failed, num_records_imported: imported, status: 'Bad Request' } };
      return { status: 200, body: { code: 200, num_records_imported: imported, status: 'OK' } };
    }
    if (r.method === 'POST' && r.path === '/engage') {
      for (const u of r.body as any[]) {
        if (u.$token !== token) return { status: 200, body: { status: 0, error: 'Invalid project token' } };
        const p = this.profiles.get(u.$distinct_id) ?? {};
        if (u.$set) Object.assign(p, u.$set);
        if (u.$set_once) for (const [k, v] of Object.entries(u.$set_once)) if (!(k in p)) p[k] = v;
        if (u.$add) for (const [k, v] of Object.entries(u.$add)) p[k] = (Number(p[k]) || 0) + Number(v);
        this.profiles.set(u.$distinct_id, p);
      }
      return { status: 200, body: { status: 1, error: null } };
    }
    return undefined;
  }
}

export async function startMixpanelStandIn(options: ConstructorParameters<typeof MixpanelStandIn>[0] = {}): Promise<MixpanelStandIn> {
  return new MixpanelStandIn(options).start();
}
