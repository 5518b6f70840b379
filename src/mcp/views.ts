import type { ClientCapabilities } from '@modelcontextprotocol/sdk/types.js';
import type { ListedTool } from './tool-listing.js';

/**
 * MCP Apps (the `io.modelcontextprotocol/ui` extension, spec 2026-01-26): which tools name a view, which
 * tools only a view may call, and how a client says it shows views. Kept free of the tool modules and of
 * the extension's package, so the stdio listing (answered before the tools load) can use it.
 *
 * A client that did not declare the extension gets today's listing byte for byte: no `_meta`, and no
 * view-only tools (a host that does not know the extension would show them to the model).
 */

/** The extension's id in `capabilities.extensions`, and the MIME type of its HTML resources (the package's EXTENSION_ID and RESOURCE_MIME_TYPE). */
export const UI_EXTENSION = 'io.modelcontextprotocol/ui';
export const VIEW_MIME_TYPE = 'text/html;profile=mcp-app';

export const VIEWS = {
  campaign_review: 'ui://customer-success/campaign-review.html',
  campaign_status: 'ui://customer-success/campaign-status.html',
  client_overview: 'ui://customer-success/client-overview.html',
  workflow: 'ui://customer-success/workflow.html',
} as const;
export type ViewName = keyof typeof VIEWS;

/** The view each tool's result is shown in. */
export const VIEW_OF_TOOL: Record<string, ViewName> = {
  send_personalized_email: 'campaign_review',
  review_campaign: 'campaign_review',
  send_reviewed_campaign: 'campaign_review',
  get_campaign_status: 'campaign_status',
  list_campaigns: 'campaign_status',
  get_client_overview: 'client_overview',
  automate_communications: 'workflow',
  get_workflow: 'workflow',
};

/** Tools only a view calls (visibility ["app"]): listed to, and callable by, clients that declared the extension only. */
export const VIEW_ONLY_TOOLS: ReadonlySet<string> = new Set(['review_campaign', 'send_reviewed_campaign']);

/** The client declared the extension with the HTML view type (or without a type list: the spec's default is HTML). */
export function showsViews(caps: ClientCapabilities | undefined): boolean {
  const ext = (caps as { extensions?: Record<string, unknown> } | undefined)?.extensions?.[UI_EXTENSION] as { mimeTypes?: unknown } | undefined;
  if (!ext || typeof ext !== 'object') return false;
  return !Array.isArray(ext.mimeTypes) || ext.mimeTypes.includes(VIEW_MIME_TYPE);
}

/** tools/list as this client sees it: unchanged without the extension; with it, each tool's view and the view-only tools. */
export function listingFor(listed: ListedTool[], views: boolean): ListedTool[] {
  if (!views) return listed.filter((t) => !VIEW_ONLY_TOOLS.has(t.name));
  return listed.map((t) => {
    const view = VIEW_OF_TOOL[t.name];
    if (!view) return t;
    const ui = { resourceUri: VIEWS[view], ...(VIEW_ONLY_TOOLS.has(t.name) ? { visibility: ['app'] } : {}) };
    return { ...t, _meta: { ui } };
  });
}
