import type { ResourceDefinition } from '../mcp/register.js';
import { clientOverview } from '../tools/clients.js';

/** How many clients resources/list shows; the rest are reachable by URI and through list_clients. */
const LISTED = 500;

export const clientResources: ResourceDefinition[] = [
  {
    name: 'client',
    title: 'Client overview',
    description: `A roster client's overview as JSON: profile, contacts, renewal, recent timeline. The first ${LISTED} clients by name are listed.`,
    uriTemplate: 'customer://clients/{client_id}',
    mimeType: 'application/json',
    async list(services) {
      const { clients } = await services.store.roster.listClients({}, { field: 'name', direction: 'asc' }, LISTED);
      return clients.map((c) => ({ uri: `customer://clients/${c.client_id}`, name: c.name, description: `${c.tier}, health ${c.health_score ?? 'unknown'}` }));
    },
    async read({ client_id }, services) {
      return clientOverview(services.store, decodeURIComponent(client_id ?? ''));
    },
  },
];
