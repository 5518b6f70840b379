import type { ResourceDefinition } from '../mcp/register.js';
import { clientResources } from './clients.js';

export const allResources: ResourceDefinition[] = [...clientResources];
