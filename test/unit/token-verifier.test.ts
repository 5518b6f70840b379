import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type JWTPayload } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { OAuthConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { IssuerTokenVerifier } from '../../src/transports/http-auth.js';

/**
 * Each claim check of the JWT path on its own: tokens signed with the published key that differ from a
 * good one in exactly one claim (a real issuer will not mint these; http-signin.test.ts covers the rest).
 */

const ISSUER = 'https://issuer.test/';
const RESOURCE = 'https://mcp.test/mcp';

describe('IssuerTokenVerifier (JWT)', () => {
  let server: http.Server;
  let sign: (claims: JWTPayload) => Promise<string>;
  let verifier: IssuerTokenVerifier;

  beforeAll(async () => {
    const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
    const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' };
    server = http.createServer((_req, res) => res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ keys: [jwk] })));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const cfg: OAuthConfig = {
      issuer: ISSUER,
      audience: RESOURCE,
      resource: RESOURCE,
      requiredScopes: [],
      jwksUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`,
      jwksCacheMs: 60_000,
      jwksCooldownMs: 0,
      clockToleranceS: 30,
    };
    verifier = new IssuerTokenVerifier(cfg, createLogger('silent'));
    const now = Math.floor(Date.now() / 1000);
    sign = (claims) => {
      const full = { iss: ISSUER, aud: RESOURCE, sub: 'u1', scope: 'cs:read cs:write', iat: now, exp: now + 600, ...claims };
      for (const [k, v] of Object.entries(full)) if (v === undefined) delete (full as Record<string, unknown>)[k];
      return new SignJWT(full).setProtectedHeader({ alg: 'ES256', kid: 'k1', typ: 'at+jwt' }).sign(privateKey);
    };
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  const now = () => Math.floor(Date.now() / 1000);

  it('accepts a good token: scopes, subject, expiry', async () => {
    const info = await verifier.verifyAccessToken(await sign({ email: 'a@x.test', scp: undefined }));
    expect(info.scopes).toEqual(['cs:read', 'cs:write']);
    expect(info.extra?.who).toEqual({ subject: 'u1', name: undefined, email: 'a@x.test' });
    expect(info.expiresAt).toBeGreaterThan(now());
  });

  it('reads scopes as Okta (scp list) and Entra (scp string) write them', async () => {
    expect((await verifier.verifyAccessToken(await sign({ scope: undefined, scp: ['cs:read', 'cs:send'] }))).scopes).toEqual(['cs:read', 'cs:send']);
    expect((await verifier.verifyAccessToken(await sign({ scope: undefined, scp: 'cs:admin cs:read' }))).scopes).toEqual(['cs:admin', 'cs:read']);
  });

  it.each([
    ['another issuer', { iss: 'https://evil.test/' }, /another issuer/],
    ['another audience', { aud: 'https://other.test/mcp' }, /another resource/],
    ['expired beyond the tolerance', { exp: Math.floor(Date.now() / 1000) - 120 }, /expired/],
    ['not valid yet', { nbf: Math.floor(Date.now() / 1000) + 600 }, /not valid yet/],
    ['no expiry', { exp: undefined }, /exp/],
  ])('refuses a token with %s', async (_what, claims, message) => {
    await expect(verifier.verifyAccessToken(await sign(claims))).rejects.toThrow(message);
  });

  it('accepts a token just expired within the clock tolerance', async () => {
    await expect(verifier.verifyAccessToken(await sign({ exp: now() - 5 }))).resolves.toBeTruthy();
  });

  it('refuses a token signed with a key the issuer does not publish', async () => {
    const { privateKey } = await generateKeyPair('ES256');
    const forged = await new SignJWT({ iss: ISSUER, aud: RESOURCE, sub: 'u1', exp: now() + 600 }).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).sign(privateKey);
    await expect(verifier.verifyAccessToken(forged)).rejects.toThrow(/signature|format/);
  });

  it('refuses an opaque token when no introspection is configured', async () => {
    await expect(verifier.verifyAccessToken('opaque-token-value')).rejects.toThrow(/not a JWT/);
  });
});
