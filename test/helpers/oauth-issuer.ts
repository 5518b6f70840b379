import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair } from 'jose';
import Provider from 'oidc-provider';

/**
 * A real OAuth 2.1 / OpenID authorization server on loopback (oidc-provider), for sign-in tests. Each
 * person is a client of the client-credentials grant (the simplest way to mint a token per role): its
 * id is the token's subject, its `scope` the role, and its name and email ride as extra claims. Access
 * tokens are RS256 JWTs for the requested resource (RFC 8707), verifiable with the published JWKS.
 * `rotateKey()` swaps in a new signing key (a new kid) under the same issuer.
 */

export interface Person {
  id: string;
  scope: string;
  name?: string;
  email?: string;
  /** Access-token lifetime in seconds (default 600). */
  ttlS?: number;
  /** Issue opaque access tokens (checked by introspection) instead of JWTs. */
  opaque?: boolean;
}

/** The resource server's own client at the issuer, for token introspection (RFC 7662). */
export const INTROSPECTOR = 'cs-mcp-server';

export const PERSON_SECRET = 'a-client-secret-long-enough-for-the-provider-0123456789';

export interface TestIssuer {
  issuer: string;
  /** A fresh access token for `person` (by id), for `resource`, with `scope` (default: all of the person's). */
  token(person: string, resource: string, scope?: string): Promise<string>;
  rotateKey(): Promise<void>;
  close(): Promise<void>;
}

async function signingKey(kid: string) {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  return { ...(await exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' };
}

export async function startIssuer(people: Person[]): Promise<TestIssuer> {
  let handler: ReturnType<Provider['callback']> | undefined;
  const server = http.createServer((req, res) => handler!(req, res));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const byId = new Map(people.map((p) => [p.id, p]));
  let generation = 0;

  const build = async () => {
    generation += 1;
    const provider = new Provider(issuer, {
      clients: [...people, { id: INTROSPECTOR, scope: 'openid' }].map((p) => ({
        client_id: p.id,
        client_secret: PERSON_SECRET,
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        scope: p.scope,
      })),
      jwks: { keys: [await signingKey(`key-${generation}`)] },
      cookies: { keys: ['sign-in-test-cookie-key'] },
      ttl: { ClientCredentials: (_ctx: unknown, token: { clientId?: string }) => byId.get(token.clientId ?? '')?.ttlS ?? 600 },
      scopes: ['openid', 'cs:read', 'cs:write', 'cs:send', 'cs:admin'],
      features: {
        devInteractions: { enabled: false },
        clientCredentials: { enabled: true },
        // Only this server's own client may ask about tokens.
        introspection: { enabled: true, allowedPolicy: (_ctx: unknown, client: { clientId: string }) => client.clientId === INTROSPECTOR },
        resourceIndicators: {
          enabled: true,
          defaultResource: () => undefined as unknown as string,
          useGrantedResource: () => true,
          getResourceServerInfo: (_ctx, resource, client) => ({
            scope: 'cs:read cs:write cs:send cs:admin',
            audience: resource,
            accessTokenTTL: byId.get(client.clientId)?.ttlS ?? 600,
            accessTokenFormat: byId.get(client.clientId)?.opaque ? 'opaque' : 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          }),
        },
      },
      extraTokenClaims: (_ctx, token) => {
        const p = byId.get((token as { clientId?: string }).clientId ?? '');
        return { ...(p?.name ? { name: p.name } : {}), ...(p?.email ? { email: p.email } : {}) };
      },
    });
    handler = provider.callback();
  };
  await build();

  return {
    issuer,
    async token(person, resource, scope) {
      const p = byId.get(person)!;
      const res = await fetch(`${issuer}/token`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded', Authorization: `Basic ${Buffer.from(`${person}:${PERSON_SECRET}`).toString('base64')}` },
        body: new URLSearchParams({ grant_type: 'client_credentials', scope: scope ?? p.scope, resource }),
      });
      const body = (await res.json()) as { access_token?: string; error?: string; error_description?: string };
      if (!body.access_token) throw new Error(`the issuer refused a token for ${person}: ${body.error} ${body.error_description}`);
      return body.access_token;
    },
    rotateKey: build,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
