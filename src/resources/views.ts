import fs from 'node:fs';
import type { ResourceDefinition } from '../mcp/register.js';
import { VIEW_MIME_TYPE, VIEWS, type ViewName } from '../mcp/views.js';
import { ToolError } from '../result.js';

/**
 * The views (MCP Apps): one self-contained HTML file each, built by `npm run build`
 * (scripts/build-views.mjs) into dist/views/. They load nothing from the network: the resource asks
 * the host for no connect or resource domains (the spec's default: none), and the page's own CSP
 * allows only its inline script and style.
 */
const FILES: Record<ViewName, string> = {
  campaign_review: 'campaign-review.html',
  campaign_status: 'campaign-status.html',
  client_overview: 'client-overview.html',
  workflow: 'workflow.html',
};

const TITLES: Record<ViewName, string> = {
  campaign_review: 'Campaign review',
  campaign_status: 'Campaign status',
  client_overview: 'Client overview',
  workflow: 'Workflow',
};

// dist/resources/ → dist/views/; from the sources (tests run them), the build's dist/views/.
const DIRS = [new URL('../views/', import.meta.url), new URL('../../dist/views/', import.meta.url)];

function readView(name: ViewName): string {
  for (const dir of DIRS) {
    try {
      return fs.readFileSync(new URL(FILES[name], dir), 'utf8');
    } catch {
      // next place
    }
  }
  throw new ToolError('not_found', `The ${TITLES[name]} view was not built: run npm run build.`);
}

export const viewResources: ResourceDefinition[] = (Object.keys(VIEWS) as ViewName[]).map((name) => ({
  name: `view_${name}`,
  title: `${TITLES[name]} (view)`,
  description: `The ${TITLES[name].toLowerCase()} view, for hosts that show MCP Apps.`,
  uriTemplate: VIEWS[name],
  mimeType: VIEW_MIME_TYPE,
  async list() {
    return [{ uri: VIEWS[name], name: `${TITLES[name]} (view)` }];
  },
  async read() {
    return { text: readView(name), _meta: { ui: { csp: { connectDomains: [], resourceDomains: [] }, prefersBorder: true } } };
  },
  raw: true,
}));
