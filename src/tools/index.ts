import type { AnyToolDefinition } from '../mcp/tool.js';
import { analyticsTools } from './analytics.js';
import { auditTools } from './audit.js';
import { automationTools } from './automations.js';
import { campaignTools } from './campaigns.js';
import { clientTools } from './clients.js';
import { emailTools } from './email.js';
import { inboxTools } from './inbox.js';
import { eventTools } from './events.js';
import { intercomTools } from './intercom.js';
import { statusTools } from './status.js';
import { viewTools } from './views.js';

/** Every tool the server offers, grouped by capability, one file per group. */
export const allTools: AnyToolDefinition[] = [
  ...intercomTools,
  ...emailTools,
  ...analyticsTools,
  ...clientTools,
  ...campaignTools,
  ...inboxTools,
  ...automationTools,
  ...eventTools,
  ...auditTools,
  ...statusTools,
  ...viewTools,
];
