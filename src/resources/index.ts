import type { ResourceDefinition } from '../mcp/register.js';
import { clientResources } from './clients.js';
import { viewResources } from './views.js';

export const allResources: ResourceDefinition[] = [...clientResources, ...viewResources];
