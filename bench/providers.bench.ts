/**
 * 10,000 Mixpanel events tracked through the MCP tool → how many /import requests reach Mixpanel,
 * events/s and peak memory; 5,000 bulk-email recipients through sendgrid_send_bulk_emails → requests.
 */
import { startInMemory, tempDataDir, testEnv } from '../test/helpers/mcp.js';
import { startMixpanelStandIn } from '../test/stand-ins/mixpanel.js';
import { startSendGridStandIn } from '../test/stand-ins/sendgrid.js';
import { fmt, line, memoryLine, withPeakMemory } from './util.js';

export default async function run(): Promise<void> {
  const mp = await startMixpanelStandIn();
  const sg = await startSendGridStandIn({ apiKey: 'SG.bench' });
  const data = tempDataDir();
  const h = await startInMemory(
    testEnv(
      {
        MIXPANEL_API_SECRET: 'mp-secret',
        MIXPANEL_API_HOST: mp.url,
        // Long enough that only size triggers a flush during the run, as in a steady stream.
        MIXPANEL_FLUSH_INTERVAL_MS: '60000',
        SENDGRID_API_KEY: 'SG.bench',
        SENDGRID_BASE_URL: sg.url,
        SENDGRID_FROM_EMAIL: 'success@ourco.test',
      },
      data.dir,
    ),
  );
  try {
    const EVENTS = 10_000;
    const started = performance.now();
    const memory = await withPeakMemory(async () => {
      for (let i = 0; i < EVENTS; i++) {
        await h.call('mixpanel_track_event', { distinct_id: `user-${i % 500}`, event: 'Report Viewed', properties: { report: `r${i % 37}`, i } });
      }
      await h.call('mixpanel_flush');
    });
    const secs = (performance.now() - started) / 1000;
    line(`Mixpanel: ${EVENTS} events via mixpanel_track_event → /import requests`, String(mp.matching(/^POST \/import/).length));
    line('Mixpanel: events stored at the stand-in', String(mp.events.size));
    line('Mixpanel: events/s through the tool (incl. delivery)', fmt(EVENTS / secs, 0));
    line('Mixpanel: peak RSS / heap MiB', memoryLine(memory));

    const RECIPIENTS = 5000;
    const recipients = Array.from({ length: RECIPIENTS }, (_, i) => ({ email: `reader${i}@example.org`, substitutions: { '-first_name-': `R${i}` } }));
    const t = performance.now();
    const r = await h.call('sendgrid_send_bulk_emails', { recipients, subject: 'News for -first_name-', text: 'Hello -first_name-' });
    line(`SendGrid: ${RECIPIENTS} bulk recipients → mail/send requests`, String(sg.matching(/^POST \/v3\/mail\/send/).length));
    line('SendGrid: accepted / failed', `${r.structuredContent.accepted} / ${r.structuredContent.failed}`);
    line('SendGrid: wall time ms', fmt(performance.now() - t, 0));
  } finally {
    await h.close();
    await mp.stop();
    await sg.stop();
    data.cleanup();
  }
}
